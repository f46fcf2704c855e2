"""Replace ``nn.MultiheadAttention`` by an equivalent module whose ONNX export keeps dynamic sequence lengths.

Tracing torch's ``multi_head_attention_forward`` (torch 2.14, TorchScript
exporter) bakes the example's sequence length into Reshape nodes, so a SYNTAX
``bert_mean`` head exported with 2 views fails on 5 views (the export's
numerical check catches this).  :class:`ExportableMHA` computes the same thing
(packed in-projection, scaled dot-product softmax attention, out-projection)
with reshapes that use -1 / traced sizes, which export as dynamic.  Masks are
not supported (the CardioNode heads use none); dropout is an eval-time no-op.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

__all__ = ["ExportableMHA", "replace_mha"]


class ExportableMHA(nn.Module):
    """Inference-only stand-in for an ``nn.MultiheadAttention`` (same weights, same outputs)."""

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        if not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("ExportableMHA supports packed q/k/v projections without bias_k/add_zero_attn")
        self.embed_dim = mha.embed_dim
        self.num_heads = mha.num_heads
        self.head_dim = mha.embed_dim // mha.num_heads
        self.batch_first = mha.batch_first
        self.in_proj = nn.Linear(mha.embed_dim, 3 * mha.embed_dim, bias=mha.in_proj_bias is not None)
        with torch.no_grad():
            self.in_proj.weight.copy_(mha.in_proj_weight)
            if mha.in_proj_bias is not None:
                self.in_proj.bias.copy_(mha.in_proj_bias)
        self.out_proj = copy.deepcopy(mha.out_proj)
        # attributes TransformerEncoderLayer reads
        self._qkv_same_embed_dim = True
        self.in_proj_weight = None
        self.in_proj_bias = None

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, E) -> (B, H, L, D)
        return x.reshape(x.size(0), -1, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_padding_mask=None,
                need_weights: bool = True, attn_mask=None, average_attn_weights: bool = True,
                is_causal: bool = False):
        if key_padding_mask is not None or attn_mask is not None or is_causal:
            raise ValueError("ExportableMHA: attention masks are not supported")
        if not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        w, b = self.in_proj.weight, self.in_proj.bias
        e = self.embed_dim
        q = nn.functional.linear(query, w[:e], None if b is None else b[:e])
        k = nn.functional.linear(key, w[e:2 * e], None if b is None else b[e:2 * e])
        v = nn.functional.linear(value, w[2 * e:], None if b is None else b[2 * e:])
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.head_dim), dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).flatten(2)  # (B, L, E)
        out = self.out_proj(out)
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out, None


def replace_mha(model: nn.Module) -> tuple[nn.Module, int]:
    """``model`` (modified in place; pass a copy) with every MultiheadAttention replaced; returns (model, count)."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.MultiheadAttention):
                setattr(parent, name, ExportableMHA(child))
                count += 1
    return model, count

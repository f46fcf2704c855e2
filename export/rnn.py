"""Rewrite LSTMs with projections (``proj_size > 0``) into ops ONNX and TensorRT have.

ONNX's LSTM operator has no projection, and the TorchScript exporter refuses
``nn.LSTM(proj_size=...)`` (the SYNTAX ``lstm_mean`` head uses
``LSTM(512, 128, proj_size=2)``).  The projected LSTM is exactly a plain LSTM
over the unprojected state followed by a bias-free linear layer:

    h_t = W_hr (o_t * tanh(c_t))      and the gates use  W_hh h_{t-1}
 => with u_t = o_t * tanh(c_t):  gates use (W_hh W_hr) u_{t-1},  output = W_hr u_t

so :class:`UnprojectedLSTM` holds a standard ``nn.LSTM(hidden_size)`` whose
recurrent weight is ``W_hh @ W_hr`` plus ``Linear(hidden, proj, bias=False)``
with weight ``W_hr``.  Zero initial state maps to zero initial state, so the
outputs are identical up to float rounding, and sequence length stays dynamic.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["UnprojectedLSTM", "unproject_lstms"]


class UnprojectedLSTM(nn.Module):
    """Drop-in replacement for a unidirectional ``nn.LSTM`` with ``proj_size > 0`` (zero initial state only)."""

    def __init__(self, lstm: nn.LSTM) -> None:
        super().__init__()
        if lstm.bidirectional:
            raise ValueError("UnprojectedLSTM supports unidirectional LSTMs only (bidirectional with proj_size "
                             "is not used by any CardioNode model)")
        if lstm.proj_size <= 0:
            raise ValueError("LSTM has no projection; export it as it is")
        self.batch_first = lstm.batch_first
        self.layers = nn.ModuleList()
        self.projs = nn.ModuleList()
        hidden, proj = lstm.hidden_size, lstm.proj_size
        for k in range(lstm.num_layers):
            in_size = lstm.input_size if k == 0 else proj
            layer = nn.LSTM(in_size, hidden, num_layers=1, bias=lstm.bias, batch_first=lstm.batch_first)
            w_hr = getattr(lstm, f"weight_hr_l{k}").detach()
            with torch.no_grad():
                layer.weight_ih_l0.copy_(getattr(lstm, f"weight_ih_l{k}"))
                layer.weight_hh_l0.copy_(getattr(lstm, f"weight_hh_l{k}").detach() @ w_hr)
                if lstm.bias:
                    layer.bias_ih_l0.copy_(getattr(lstm, f"bias_ih_l{k}"))
                    layer.bias_hh_l0.copy_(getattr(lstm, f"bias_hh_l{k}"))
            lin = nn.Linear(hidden, proj, bias=False)
            with torch.no_grad():
                lin.weight.copy_(w_hr)
            self.layers.append(layer)
            self.projs.append(lin)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        if state is not None:
            raise ValueError("UnprojectedLSTM assumes a zero initial state (as the CardioNode heads use)")
        h_n, c_n = [], []
        out = x
        for layer, proj in zip(self.layers, self.projs):
            u, (u_n, c) = layer(out)
            out = proj(u)
            h_n.append(proj(u_n))
            c_n.append(c)
        return out, (torch.cat(h_n, 0), torch.cat(c_n, 0))


def unproject_lstms(model: nn.Module) -> tuple[nn.Module, int]:
    """A deep copy of ``model`` with every projected LSTM replaced; returns (model, number replaced)."""
    if isinstance(model, nn.LSTM) and model.proj_size > 0:
        return UnprojectedLSTM(model), 1
    model = copy.deepcopy(model)
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.LSTM) and child.proj_size > 0:
                setattr(parent, name, UnprojectedLSTM(child))
                count += 1
    return model, count

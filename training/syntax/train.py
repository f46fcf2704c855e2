"""Training of the SYNTAX models: stage 1 backbone (one cine), stage 2 multi-view head, artery classifier.

    python -m training.syntax.train backbone -r ROOT --fold 0 -a right -b 50 -f 32 -v 256 256 --use-weighted-sampler
    python -m training.syntax.train head -r ROOT --fold 0 -a right --variant lstm_mean --backbone-pt-dir backbone_weights
    python -m training.syntax.train classifier -r ROOT --fold 0
    python -m training.syntax.train calibrate -r ROOT --fold 0 --variant lstm_mean

Checkpoints are plain state_dicts named and laid out as the published ones (so that the importer,
the evaluation and the export treat ours and theirs alike):

    <logdir>/backbone_weights/{Left,Right}BinSyntax_R3D_full_fold{k:02d}.pt
    <logdir>/full_model_weights/{Left,Right}BinSyntax_R3D_fold{k:02d}_{variant}_post_best.pt
    <logdir>/artery_weights/ArteryClassifier_R3D_fold{k:02d}.pt
    <logdir>/scaling_coeffs.json      {"fold{k}": {"a": ..., "b": ...}}

Losses (card): weighted BCE on output 0 (target: artery score > 0, pos_weight = negatives/positives)
+ ``mse_scale`` x MSE on output 1 (target log(1 + artery score)).  ``--use-weighted-sampler`` draws
samples with weights 1 / count of their score interval (0, (0,5], (5,10], (10,15], (15,22], (22,32], > 32).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from pipelines.syntax.preprocess import CineConfig, preprocess_cine

from .data import StudyRecord, VideoRecord, fold_path, load_video, read_format1, read_format2, rnn_fold_path
from .model import VARIANTS, ArteryClassifier, SyntaxBackbone, SyntaxMultiView

log = logging.getLogger("cardionode.training.syntax")

SCORE_BINS = (0.0, 5.0, 10.0, 15.0, 22.0, 32.0)
#: artery_prob bounds of a confident left / right cine (reference notes; the apps route with these)
LEFT_MAX, RIGHT_MIN = 0.10, 0.90

__all__ = ["backbone_name", "head_name", "classifier_name", "score_interval_weights", "syntax_loss", "ClipDataset",
           "train_backbone", "train_head", "train_classifier", "fit_calibration", "main", "TrainArgs"]


def backbone_name(artery: str, fold: int) -> str:
    return f"{artery.capitalize()}BinSyntax_R3D_full_fold{fold:02d}.pt"


def head_name(artery: str, fold: int, variant: str) -> str:
    return f"{artery.capitalize()}BinSyntax_R3D_fold{fold:02d}_{variant}_post_best.pt"


def classifier_name(fold: int) -> str:
    return f"ArteryClassifier_R3D_fold{fold:02d}.pt"


def score_interval_weights(scores: Sequence[float]) -> np.ndarray:
    """Sampling weight per sample: 1 / (number of samples in its score interval)."""
    s = np.asarray(scores, np.float64)
    bins = np.digitize(s, SCORE_BINS, right=True)  # 0 -> bin 0, (0,5] -> 1, ...
    counts = np.bincount(bins, minlength=len(SCORE_BINS) + 1).astype(np.float64)
    return 1.0 / counts[bins]


def syntax_loss(out: torch.Tensor, score: torch.Tensor, pos_weight: float, mse_scale: float) -> torch.Tensor:
    """Weighted BCE (score > 0) on out[:, 0] + mse_scale * MSE(out[:, 1], log1p(score))."""
    target = (score > 0).float()
    bce = nn.functional.binary_cross_entropy_with_logits(out[:, 0], target,
                                                         pos_weight=torch.tensor(pos_weight, device=out.device))
    mse = nn.functional.mse_loss(out[:, 1], torch.log1p(score))
    return bce + mse_scale * mse


def invert(reg: np.ndarray | torch.Tensor) -> np.ndarray:
    """Artery score from the regression output: max(0, exp(x) - 1)."""
    x = reg.detach().cpu().numpy() if isinstance(reg, torch.Tensor) else np.asarray(reg)
    return np.maximum(0.0, np.expm1(x.astype(np.float64)))


class _CineCache:
    """Decoded cines kept in memory (datasets here are small; the release would use workers)."""

    def __init__(self) -> None:
        self._d: dict[Path, np.ndarray] = {}

    def __call__(self, path: Path) -> np.ndarray:
        if path not in self._d:
            self._d[path] = load_video(path)
        return self._d[path]


def _start(n: int, frames: int, rng: np.random.Generator | None) -> int | None:
    if rng is None:
        return None
    total = n * -(-frames // n)
    return int(rng.integers(0, total - frames + 1))


class ClipDataset(Dataset):
    """Format 1 cines -> (clip (3, F, H, W), target).  Random clip start when ``train``, centred otherwise."""

    def __init__(self, records: Sequence[VideoRecord], targets: Sequence[float], cfg: CineConfig, train: bool,
                 seed: int = 0, cache: _CineCache | None = None) -> None:
        self.records, self.targets, self.cfg, self.train = list(records), list(targets), cfg, train
        self.rng = np.random.default_rng(seed)
        self.cache = cache or _CineCache()

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        cine = self.cache(self.records[i].path)
        start = _start(cine.shape[0], self.cfg.frames, self.rng if self.train else None)
        x = preprocess_cine(cine, self.cfg, start)
        return torch.from_numpy(x), torch.tensor(float(self.targets[i]), dtype=torch.float32)


@dataclasses.dataclass
class TrainArgs:
    """Options shared by the stages (the card's names)."""

    dataset_root: Path = Path(".")
    fold: int = 4
    artery: str = "right"
    num_classes: int = 2
    batch_size: int = 50
    frames_per_clip: int = 32
    video_size: tuple[int, int] = (256, 256)
    max_epochs: int = 10
    num_workers: int = 0
    devices: str = ""
    precision: str = "32"
    logdir: Path = Path("./logs/backbone")
    use_weighted_sampler: bool = False
    seed: int = 42
    variant: str = "lstm_mean"
    backbone_pt_dir: Path | None = None
    rnn_folds_dir: str = "rnn_folds"
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    hidden: int = 128
    lr: float = 3e-4
    mse_scale: float = 1.0
    freeze_backbone: bool = False
    max_views: int = 8
    progress: bool = True

    @property
    def cine_config(self) -> CineConfig:
        return CineConfig(frames=self.frames_per_clip, height=self.video_size[0], width=self.video_size[1])

    @property
    def device(self) -> torch.device:
        return torch.device(f"cuda:{self.devices.split(',')[0]}" if self.devices.strip() else "cpu")

    def autocast(self):
        if self.precision.startswith("bf16"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        if self.precision.startswith("16") and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return nullcontext()


def _progress(it, total: int, desc: str, enabled: bool):
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc=desc, leave=False, dynamic_ncols=True)


def _side_records(records: Sequence[VideoRecord], artery: str) -> list[VideoRecord]:
    want = 0 if artery == "left" else 1
    return [r for r in records if r.artery == want and (r.artery_prob <= LEFT_MAX if want == 0 else r.artery_prob >= RIGHT_MIN)]


def _loader(ds: Dataset, weights: np.ndarray | None, args: TrainArgs, shuffle: bool) -> DataLoader:
    g = torch.Generator().manual_seed(args.seed)
    sampler = WeightedRandomSampler(torch.as_tensor(weights), len(weights), replacement=True, generator=g) if weights is not None else None
    return DataLoader(ds, batch_size=args.batch_size, sampler=sampler, shuffle=shuffle and sampler is None,
                      num_workers=args.num_workers, generator=g if sampler is None else None, drop_last=False)


def _pos_weight(scores: Sequence[float]) -> float:
    pos = sum(1 for s in scores if s > 0)
    neg = len(scores) - pos
    return float(neg / pos) if pos and neg else 1.0


def _to(x: torch.Tensor | list[torch.Tensor], dev: torch.device) -> torch.Tensor | list[torch.Tensor]:
    """A batch tensor, or a list of per-study tensors (multi-view batches), on ``dev``."""
    return [t.to(dev) for t in x] if isinstance(x, list) else x.to(dev)


def _fit(model: nn.Module, train_dl: DataLoader, eval_fn: Callable[[nn.Module], float], loss_fn, args: TrainArgs,
         desc: str) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    """Adam + cosine schedule; keeps the state with the lowest eval loss (``_best``)."""
    dev = args.device
    model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    steps = max(1, args.max_epochs * len(train_dl))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.15)
    best, best_state, history = math.inf, None, []
    for epoch in range(args.max_epochs):
        model.train()
        if args.freeze_backbone and hasattr(model, "model"):
            model.model.eval()
        t0, total, n = time.perf_counter(), 0.0, 0
        for x, y in _progress(train_dl, len(train_dl), f"{desc} epoch {epoch + 1}/{args.max_epochs}", args.progress):
            x, y = _to(x, dev), y.to(dev)
            with args.autocast():
                out = model(x)
            loss = loss_fn(out.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(y)
            n += len(y)
        val = eval_fn(model)
        history.append({"epoch": epoch + 1, "train_loss": total / max(n, 1), "eval_loss": val,
                        "seconds": round(time.perf_counter() - t0, 1)})
        log.info("%s epoch %d: train loss %.4f, eval loss %.4f (%.0f s)", desc, epoch + 1, total / max(n, 1), val,
                 time.perf_counter() - t0)
        if val <= best or best_state is None:
            best = val
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    assert best_state is not None
    model.load_state_dict(best_state)
    return best_state, history


@torch.no_grad()
def _eval_loss(model: nn.Module, dl: DataLoader, loss_fn, args: TrainArgs) -> float:
    model.eval()
    total, n = 0.0, 0
    for x, y in dl:
        x, y = x.to(args.device), y.to(args.device)
        with args.autocast():
            out = model(x)
        total += float(loss_fn(out.float(), y)) * len(y)
        n += len(y)
    return total / max(n, 1)


def train_backbone(args: TrainArgs, train_records: Sequence[VideoRecord] | None = None,
                   eval_records: Sequence[VideoRecord] | None = None) -> tuple[Path, list[dict[str, float]]]:
    """Stage 1 on Format 1 cines of ``args.artery``; writes backbone_weights/<name>.pt (``model.*``)."""
    torch.manual_seed(args.seed)
    root = args.dataset_root
    tr = _side_records(train_records if train_records is not None else read_format1(fold_path(root, args.fold, "train"), root), args.artery)
    ev = _side_records(eval_records if eval_records is not None else read_format1(fold_path(root, args.fold, "eval"), root), args.artery)
    if not tr:
        raise ValueError(f"no confident {args.artery} cines in fold {args.fold} train split")
    cache = _CineCache()
    ys = [r.artery_score(args.artery) for r in tr]
    pw = _pos_weight(ys)
    loss_fn = lambda out, y: syntax_loss(out, y, pw, args.mse_scale)  # noqa: E731
    train_dl = _loader(ClipDataset(tr, ys, args.cine_config, True, args.seed, cache),
                       score_interval_weights(ys) if args.use_weighted_sampler else None, args, True)
    eval_dl = DataLoader(ClipDataset(ev or tr, [r.artery_score(args.artery) for r in (ev or tr)], args.cine_config, False,
                                     cache=cache), batch_size=args.batch_size)
    model = SyntaxBackbone(args.num_classes, args.widths)
    state, hist = _fit(model, train_dl, lambda m: _eval_loss(m, eval_dl, loss_fn, args), loss_fn, args,
                       f"backbone {args.artery} fold {args.fold}")
    out = Path(args.logdir) / "backbone_weights" / backbone_name(args.artery, args.fold)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    log.info("wrote %s", out)
    return out, hist


class _StudyDataset(Dataset):
    """Format 2 studies -> (views (V, 3, F, H, W), artery score); at most ``max_views`` views."""

    def __init__(self, studies: Sequence[StudyRecord], artery: str, cfg: CineConfig, train: bool, max_views: int,
                 seed: int, cache: _CineCache) -> None:
        self.studies = [s for s in studies if s.side(artery)]
        self.artery, self.cfg, self.train, self.max_views, self.cache = artery, cfg, train, max_views, cache
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.studies)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.studies[i]
        vids = sorted(s.side(self.artery), key=lambda v: (v.series_uid, v.path.name))[: self.max_views]
        clips = []
        for v in vids:
            cine = self.cache(v.path)
            clips.append(preprocess_cine(cine, self.cfg, _start(cine.shape[0], self.cfg.frames, self.rng if self.train else None)))
        return torch.from_numpy(np.stack(clips)), torch.tensor(s.artery_score(self.artery), dtype=torch.float32)


def _collate_views(batch):
    """Studies have different view counts (padding would change mean / last heads): a batch is a list
    of per-study tensors plus the stacked targets."""
    xs, ys = zip(*batch)
    return list(xs), torch.stack(ys)


class _PerStudy(nn.Module):
    """Runs a multi-view model study by study (view counts differ) and stacks the outputs."""

    def __init__(self, model: SyntaxMultiView) -> None:
        super().__init__()
        self.inner = model

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([self.inner(x[None]) for x in xs])


class _FeatureStudies(Dataset):
    """Frozen backbone: per-study (V, D) features computed once (centred clips), targets."""

    def __init__(self, feats: list[torch.Tensor], ys: list[float]) -> None:
        self.feats, self.ys = feats, ys

    def __len__(self) -> int:
        return len(self.feats)

    def __getitem__(self, i: int):
        return self.feats[i], torch.tensor(self.ys[i], dtype=torch.float32)


@torch.no_grad()
def study_features(model: SyntaxMultiView, ds: "_StudyDataset", args: TrainArgs) -> list[torch.Tensor]:
    model.eval().to(args.device)
    out = []
    for i in range(len(ds)):
        x, _ = ds[i]
        with args.autocast():
            out.append(model.features(x[None].to(args.device))[0].float().cpu())
    return out


class _HeadOnly(nn.Module):
    def __init__(self, model: SyntaxMultiView) -> None:
        super().__init__()
        self.inner = model

    def forward(self, fs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([self.inner.head(f[None]) for f in fs])


def train_head(args: TrainArgs, train_studies: Sequence[StudyRecord] | None = None,
               eval_studies: Sequence[StudyRecord] | None = None) -> tuple[Path, list[dict[str, float]]]:
    """Stage 2 on Format 2 studies; backbone from ``backbone_pt_dir``; writes full_model_weights/<name>.pt."""
    torch.manual_seed(args.seed)
    root = args.dataset_root
    tr = list(train_studies if train_studies is not None else read_format2(rnn_fold_path(root, args.fold, "train", args.rnn_folds_dir), root))
    ev = list(eval_studies if eval_studies is not None else read_format2(rnn_fold_path(root, args.fold, "eval", args.rnn_folds_dir), root))
    model = SyntaxMultiView(args.variant, args.num_classes, args.widths, hidden=args.hidden)
    bdir = Path(args.backbone_pt_dir) if args.backbone_pt_dir else Path(args.logdir) / "backbone_weights"
    bpath = bdir / backbone_name(args.artery, args.fold)
    if not bpath.is_file():
        raise FileNotFoundError(f"backbone checkpoint {bpath} not found (train stage 1 or pass --backbone-pt-dir)")
    model.load_backbone(torch.load(bpath, map_location="cpu", weights_only=True))
    cache = _CineCache()
    tr_ds = _StudyDataset(tr, args.artery, args.cine_config, not args.freeze_backbone, args.max_views, args.seed, cache)
    ev_ds = _StudyDataset(ev or tr, args.artery, args.cine_config, False, args.max_views, args.seed, cache)
    ys = [s.artery_score(args.artery) for s in tr_ds.studies]
    pw = _pos_weight(ys)
    loss_fn = lambda out, y: syntax_loss(out, y, pw, args.mse_scale)  # noqa: E731
    g = torch.Generator().manual_seed(args.seed)
    weights = score_interval_weights(ys) if args.use_weighted_sampler else None
    sampler = WeightedRandomSampler(torch.as_tensor(weights), len(weights), generator=g) if weights is not None else None
    if args.freeze_backbone:
        for p in model.model.parameters():
            p.requires_grad_(False)
        wrapped: nn.Module = _HeadOnly(model)
        tr_set: Dataset = _FeatureStudies(study_features(model, tr_ds, args), ys)
        ev_set: Dataset = _FeatureStudies(study_features(model, ev_ds, args), [s.artery_score(args.artery) for s in ev_ds.studies])
    else:
        wrapped, tr_set, ev_set = _PerStudy(model), tr_ds, ev_ds
    train_dl = DataLoader(tr_set, batch_size=args.batch_size, sampler=sampler, shuffle=sampler is None,
                          generator=g if sampler is None else None, collate_fn=_collate_views, num_workers=args.num_workers)
    eval_dl = DataLoader(ev_set, batch_size=args.batch_size, collate_fn=_collate_views)
    state, hist = _fit_list_batches(wrapped, train_dl, eval_dl, loss_fn, args, f"head {args.variant} {args.artery} fold {args.fold}")
    full = {k.removeprefix("inner."): v for k, v in state.items()}
    out = Path(args.logdir) / "full_model_weights" / head_name(args.artery, args.fold, args.variant)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(full, out)
    log.info("wrote %s", out)
    return out, hist


def _fit_list_batches(model: nn.Module, train_dl: DataLoader, eval_dl: DataLoader, loss_fn, args: TrainArgs, desc: str):
    """Like :func:`_fit` for batches that are lists of per-study tensors."""
    dev = args.device

    class _Moved:
        def __init__(self, dl):
            self.dl = dl

        def __len__(self):
            return len(self.dl)

        def __iter__(self):
            for xs, y in self.dl:
                yield [x.to(dev) for x in xs], y.to(dev)

    def eval_fn(m: nn.Module) -> float:
        m.eval()
        total, n = 0.0, 0
        with torch.no_grad():
            for xs, y in _Moved(eval_dl):
                with args.autocast():
                    out = m(xs)
                total += float(loss_fn(out.float(), y)) * len(y)
                n += len(y)
        return total / max(n, 1)

    return _fit(model, _Moved(train_dl), eval_fn, loss_fn, args, desc)  # type: ignore[arg-type]


def train_classifier(args: TrainArgs, train_records: Sequence[VideoRecord] | None = None,
                     eval_records: Sequence[VideoRecord] | None = None) -> tuple[Path, list[dict[str, float]]]:
    """Artery classifier on Format 1 cines; target = the record's artery_prob (soft labels: confident
    left ~0, right ~1, ambiguous views ~0.5 so that they fall between the routing thresholds)."""
    torch.manual_seed(args.seed)
    root = args.dataset_root
    tr = list(train_records if train_records is not None else read_format1(fold_path(root, args.fold, "train"), root))
    ev = list(eval_records if eval_records is not None else read_format1(fold_path(root, args.fold, "eval"), root))
    cache = _CineCache()
    bce = lambda out, y: nn.functional.binary_cross_entropy_with_logits(out[:, 0], y)  # noqa: E731
    train_dl = _loader(ClipDataset(tr, [r.artery_prob for r in tr], args.cine_config, True, args.seed, cache), None, args, True)
    eval_dl = DataLoader(ClipDataset(ev or tr, [r.artery_prob for r in (ev or tr)], args.cine_config, False, cache=cache),
                         batch_size=args.batch_size)
    model = ArteryClassifier(args.widths)
    state, hist = _fit(model, train_dl, lambda m: _eval_loss(m, eval_dl, bce, args), bce, args, f"artery classifier fold {args.fold}")
    out = Path(args.logdir) / "artery_weights" / classifier_name(args.fold)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    log.info("wrote %s", out)
    return out, hist


def fit_calibration(pred_total: Sequence[float], true_total: Sequence[float]) -> dict[str, float]:
    """Least-squares a, b of true ~ a * pred + b (a = 1, b = 0 when the predictions do not vary)."""
    x, y = np.asarray(pred_total, np.float64), np.asarray(true_total, np.float64)
    if len(x) < 2 or np.ptp(x) < 1e-9:
        return {"a": 1.0, "b": 0.0}
    a, b = np.polyfit(x, y, 1)
    return {"a": float(a), "b": float(b)}


def update_scaling(path: Path, fold: int, coeffs: dict[str, float]) -> None:
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[f"fold{fold}"] = coeffs
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


def setup_logging(logdir: Path | None = None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if logdir is not None:
        Path(logdir).mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(Path(logdir) / "train.log"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers, force=True)


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-r", "--dataset-root", type=Path, default=Path("."))
    p.add_argument("--fold", type=int, default=4, choices=range(5))
    p.add_argument("-a", "--artery", choices=("left", "right"), default="right")
    p.add_argument("-nc", "--num-classes", type=int, default=2)
    p.add_argument("-b", "--batch-size", type=int, default=50)
    p.add_argument("-f", "--frames-per-clip", type=int, default=32)
    p.add_argument("-v", "--video-size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"))
    p.add_argument("--max-epochs", type=int, default=10)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--devices", default="", help="CUDA device ids, e.g. 0 (empty = CPU)")
    p.add_argument("--precision", default="32", choices=("32", "32-true", "bf16-mixed", "16-mixed"))
    p.add_argument("--logdir", type=Path, default=Path("./logs/backbone"))
    p.add_argument("--use-weighted-sampler", action="store_true")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--widths", type=int, nargs=4, default=(64, 128, 256, 512),
                   help="R3D-18 layer widths (default = torchvision r3d_18; smaller for reduced models)")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--mse-scale", type=float, default=1.0)
    p.add_argument("--no-progress", action="store_true")


def args_from(ns: argparse.Namespace) -> TrainArgs:
    fields = {f.name for f in dataclasses.fields(TrainArgs)}
    kw = {k: v for k, v in vars(ns).items() if k in fields}
    kw["video_size"] = tuple(ns.video_size)
    kw["widths"] = tuple(ns.widths)
    kw["progress"] = not ns.no_progress
    return TrainArgs(**kw)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.syntax.train", description="Train the CardioSyntax models")
    sub = p.add_subparsers(dest="stage", required=True)
    for name in ("backbone", "head", "classifier", "calibrate"):
        sp = sub.add_parser(name)
        add_common(sp)
        if name in ("head", "calibrate"):
            sp.add_argument("--variant", choices=VARIANTS, default="lstm_mean")
            sp.add_argument("--backbone-pt-dir", type=Path, default=None)
            sp.add_argument("--backbone-from-pt", action="store_true", default=True)
            sp.add_argument("--rnn-folds-dir", default="rnn_folds")
            sp.add_argument("--hidden", type=int, default=128)
            sp.add_argument("--freeze-backbone", action="store_true")
            sp.add_argument("--max-views", type=int, default=8)
    ns = p.parse_args(argv)
    args = args_from(ns)
    setup_logging(args.logdir)
    if ns.stage == "backbone":
        train_backbone(args)
    elif ns.stage == "head":
        train_head(args)
    elif ns.stage == "classifier":
        train_classifier(args)
    else:
        from .evaluate import load_side_models, predict_studies

        studies = read_format2(rnn_fold_path(args.dataset_root, args.fold, "eval", args.rnn_folds_dir), args.dataset_root)
        pred = {}
        for side in ("left", "right"):
            model = load_side_models(args.logdir / "full_model_weights", side, [args.fold], args.variant)[0]
            pred[side] = predict_studies(model, studies, side, args.cine_config, args.device)
        coeffs = fit_calibration(pred["left"] + pred["right"], [s.syntax for s in studies])
        update_scaling(args.logdir / "scaling_coeffs.json", args.fold, coeffs)
        log.info("fold %d calibration a=%.4f b=%.4f -> %s", args.fold, coeffs["a"], coeffs["b"], args.logdir / "scaling_coeffs.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

r"""Training of the SYNTAX models: stage 1 backbone (one cine), stage 2 multi-view head, artery classifier.

    python -m training.syntax.train backbone -r ROOT --fold 0 -a right -b 50 -f 32 -v 256 256 --use-weighted-sampler
    python -m training.syntax.train head -r ROOT --fold 0 -a right --variant lstm_mean \
        --backbone-pt-dir backbone_weights
    python -m training.syntax.train classifier -r ROOT --fold 0
    python -m training.syntax.train calibrate -r ROOT --fold 0 --variant lstm_mean

Every stage is one run of the shared run layer (training/runs) in ``<logdir>/runs/<stage>-...``:
config.yaml, train.log, metrics.csv, curves.png, last.pt (``--resume``), best.pt (lowest eval loss).
At the end the best weights are written as plain state_dicts named and laid out as the published ones
(so that the importer, the evaluation and the export treat ours and theirs alike), each with a
``<name>.run.json`` record beside it (training data, config, code version, metrics) that the export
turns into the manifest's provenance:

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
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from pipelines.syntax.preprocess import CineConfig, preprocess_cine
from training.datasets.marker import data_source
from training.runs import RunOptions, TrainingRun, resolve_device, resolve_precision
from training.runs.checkpoint import check_finite, save_atomic
from training.runs.cli import one_line_errors
from training.runs.config import add_run_arguments, parse_with_config
from training.runs.logs import setup_logging
from training.runs.progress import progress
from training.runs.schedule import one_cycle

from .data import StudyRecord, VideoRecord, fold_path, load_video, read_format1, read_format2, rnn_fold_path
from .model import VARIANTS, ArteryClassifier, SyntaxBackbone, SyntaxMultiView
from .predict import load_side_models, predict_studies

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
    device_name: str = ""  # --device cpu|cuda|cuda:N; the card's --devices N means cuda:N
    resume: bool = False
    overwrite: bool = False
    config: dict | None = None  # the resolved command-line options, saved with each run

    @property
    def cine_config(self) -> CineConfig:
        return CineConfig(frames=self.frames_per_clip, height=self.video_size[0], width=self.video_size[1])

    @property
    def device(self) -> torch.device:
        """The device that exists (one-line DeviceError otherwise)."""
        return resolve_device(self.device_name
                              or (self.devices.split(",")[0].strip() if self.devices.strip() else "cpu"))

    def autocast(self):
        return resolve_precision(self.precision, self.device).autocast()

    def run(self, name: str, published: Path, data: dict) -> TrainingRun:
        """The run folder ``<logdir>/runs/<name>`` of one stage; ``published`` is its final published-layout file."""
        opts = RunOptions(out=Path(self.logdir) / "runs" / name, resume=self.resume, overwrite=self.overwrite,
                          device=(self.device_name
                                  or (self.devices.split(",")[0].strip() if self.devices.strip() else "cpu")),
                          precision=self.precision, progress=self.progress, monitor="eval_loss", mode="min")
        cfg = dict(self.config) if self.config else {k: v for k, v in dataclasses.asdict(self).items() if k != "config"}
        return TrainingRun(opts, family="syntax", config=cfg, logger_names=["cardionode.training.syntax"], data=data,
                           guard_files=[published])


def _data_record(args: TrainArgs, layout_file: Path, counts: dict[str, int], records: Sequence) -> dict:
    """training_data of a stage: the release folder, its counts, and whether it is generated (marker, or the
    phantom manufacturer the generator writes into every record)."""
    reason = next((f"{layout_file}: manufacturer {r.manufacturer!r}" for r in records
                   if "phantom" in str(getattr(r, "manufacturer", "")).lower()), None)
    src = data_source(args.dataset_root, "CardioSyntax v2", counts, content_generated=reason, file=str(layout_file))
    return {"sources": [src], "generated": src["generated"], "cases": counts}


def _publish(run: TrainingRun, state: dict[str, torch.Tensor], path: Path) -> Path:
    """Write the best weights in the published layout and the run's record beside them (``<name>.run.json``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    check_finite(state, str(path))
    save_atomic(state, path)
    best = run.best or {}
    row = next((r for r in run.history if r["epoch"] == best.get("epoch")), {})
    record = {"run": str(run.folder), "training_data": run.data, "config": run.config, "code_version": run.code_version,
              "metrics": {k: v for k, v in row.items() if k not in ("epoch", "seconds")},
              "metrics_method": f"eval_loss: mean training loss (weighted BCE + scaled MSE) on the fold's eval split; "
                                f"best epoch {best.get('epoch')} of {len(run.history)}",
              "precision": run.precision.name, "device": str(run.device)}
    Path(str(path) + ".run.json").write_text(json.dumps(record, indent=1, default=str))
    run.finish(published=str(path))
    log.info("wrote %s", path)
    return path


def _side_records(records: Sequence[VideoRecord], artery: str) -> list[VideoRecord]:
    want = 0 if artery == "left" else 1
    return [r for r in records
            if r.artery == want and (r.artery_prob <= LEFT_MAX if want == 0 else r.artery_prob >= RIGHT_MIN)]


def _loader(ds: Dataset, weights: np.ndarray | None, args: TrainArgs,
            shuffle: bool) -> tuple[DataLoader, torch.Generator]:
    """The training loader and the generator that drives its order (its state is saved for --resume)."""
    g = torch.Generator().manual_seed(args.seed)
    sampler = (WeightedRandomSampler(torch.as_tensor(weights), len(weights), replacement=True, generator=g)
               if weights is not None else None)
    return DataLoader(ds, batch_size=args.batch_size, sampler=sampler, shuffle=shuffle and sampler is None,
                      num_workers=args.num_workers, generator=g if sampler is None else None, drop_last=False), g


def _pos_weight(scores: Sequence[float]) -> float:
    pos = sum(1 for s in scores if s > 0)
    neg = len(scores) - pos
    return float(neg / pos) if pos and neg else 1.0


def _to(x: torch.Tensor | list[torch.Tensor], dev: torch.device) -> torch.Tensor | list[torch.Tensor]:
    """A batch tensor, or a list of per-study tensors (multi-view batches), on ``dev``."""
    return [t.to(dev) for t in x] if isinstance(x, list) else x.to(dev)


def _fit(model: nn.Module, train_dl: DataLoader, eval_fn: Callable[[nn.Module], float], loss_fn, args: TrainArgs,
         desc: str, run: TrainingRun, rngs: dict) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    """AdamW + one-cycle schedule per batch; after each epoch the eval loss is recorded and last.pt / best.pt
    (lowest eval loss, ties to the later epoch) written by ``run``; returns the best state and the history."""
    dev = run.device
    model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    steps = max(1, args.max_epochs * len(train_dl))
    sched = one_cycle(opt, args.lr, steps, pct_start=0.15)
    start = run.restore(model, opt, sched, rngs)
    for epoch in range(start, args.max_epochs):
        model.train()
        if args.freeze_backbone and hasattr(model, "model"):
            model.model.eval()
        total, n = 0.0, 0
        for i, (x, y) in enumerate(progress(train_dl, len(train_dl), f"{desc} epoch {epoch + 1}/{args.max_epochs}",
                                            args.progress)):
            x, y = _to(x, dev), y.to(dev)
            with run.autocast():
                out = model(x)
            loss = loss_fn(out.float(), y)
            run.backward_step(loss, opt, where=f"{desc} epoch {epoch + 1} batch {i + 1}")
            sched.step()
            total += float(loss.detach()) * len(y)
            n += len(y)
        run.end_epoch(epoch + 1, {"train_loss": total / max(n, 1), "eval_loss": eval_fn(model)}, model, opt, sched,
                      rngs)
    best_state = run.best_state()
    model.load_state_dict(best_state)
    return best_state, run.history


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
    tr = _side_records(train_records if train_records is not None
                       else read_format1(fold_path(root, args.fold, "train"), root), args.artery)
    ev = _side_records(eval_records if eval_records is not None
                       else read_format1(fold_path(root, args.fold, "eval"), root), args.artery)
    if not tr:
        raise ValueError(f"no confident {args.artery} cines in fold {args.fold} train split")
    cache = _CineCache()
    ys = [r.artery_score(args.artery) for r in tr]
    pw = _pos_weight(ys)
    loss_fn = lambda out, y: syntax_loss(out, y, pw, args.mse_scale)  # noqa: E731
    train_ds = ClipDataset(tr, ys, args.cine_config, True, args.seed, cache)
    train_dl, g = _loader(train_ds, score_interval_weights(ys) if args.use_weighted_sampler else None, args, True)
    eval_dl = DataLoader(ClipDataset(ev or tr, [r.artery_score(args.artery) for r in (ev or tr)], args.cine_config,
                                     False, cache=cache), batch_size=args.batch_size)
    model = SyntaxBackbone(args.num_classes, args.widths)
    out = Path(args.logdir) / "backbone_weights" / backbone_name(args.artery, args.fold)
    run = args.run(f"backbone-{args.artery}-fold{args.fold}", out,
                   _data_record(args, fold_path(root, args.fold, "train"),
                                {"train_cines": len(tr), "eval_cines": len(ev)}, tr + ev))
    try:
        state, hist = _fit(model, train_dl, lambda m: _eval_loss(m, eval_dl, loss_fn, args), loss_fn, args,
                           f"backbone {args.artery} fold {args.fold}", run, {"loader": g, "clips": train_ds.rng})
        return _publish(run, state, out), hist
    except BaseException as exc:
        run.fail(exc)
        raise


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
            clips.append(preprocess_cine(cine, self.cfg,
                                         _start(cine.shape[0], self.cfg.frames, self.rng if self.train else None)))
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
    tr = list(train_studies if train_studies is not None
              else read_format2(rnn_fold_path(root, args.fold, "train", args.rnn_folds_dir), root))
    ev = list(eval_studies if eval_studies is not None
              else read_format2(rnn_fold_path(root, args.fold, "eval", args.rnn_folds_dir), root))
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
    sampler = (WeightedRandomSampler(torch.as_tensor(weights), len(weights), generator=g)
               if weights is not None else None)
    if args.freeze_backbone:
        for p in model.model.parameters():
            p.requires_grad_(False)
        wrapped: nn.Module = _HeadOnly(model)
        tr_set: Dataset = _FeatureStudies(study_features(model, tr_ds, args), ys)
        ev_set: Dataset = _FeatureStudies(study_features(model, ev_ds, args),
                                          [s.artery_score(args.artery) for s in ev_ds.studies])
    else:
        wrapped, tr_set, ev_set = _PerStudy(model), tr_ds, ev_ds
    train_dl = DataLoader(tr_set, batch_size=args.batch_size, sampler=sampler, shuffle=sampler is None,
                          generator=g if sampler is None else None, collate_fn=_collate_views,
                          num_workers=args.num_workers)
    eval_dl = DataLoader(ev_set, batch_size=args.batch_size, collate_fn=_collate_views)
    out = Path(args.logdir) / "full_model_weights" / head_name(args.artery, args.fold, args.variant)
    run = args.run(f"head-{args.variant}-{args.artery}-fold{args.fold}", out,
                   _data_record(args, rnn_fold_path(root, args.fold, "train", args.rnn_folds_dir),
                                {"train_studies": len(tr), "eval_studies": len(ev)}, tr + ev))
    try:
        state, hist = _fit_list_batches(wrapped, train_dl, eval_dl, loss_fn, args,
                                        f"head {args.variant} {args.artery} fold {args.fold}", run,
                                        {"loader": g, "views": tr_ds.rng})
        full = {k.removeprefix("inner."): v for k, v in state.items()}
        return _publish(run, full, out), hist
    except BaseException as exc:
        run.fail(exc)
        raise


def _fit_list_batches(model: nn.Module, train_dl: DataLoader, eval_dl: DataLoader, loss_fn, args: TrainArgs, desc: str,
                      run: TrainingRun, rngs: dict):
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
                with run.autocast():
                    out = m(xs)
                total += float(loss_fn(out.float(), y)) * len(y)
                n += len(y)
        return total / max(n, 1)

    return _fit(model, _Moved(train_dl), eval_fn, loss_fn, args, desc, run, rngs)  # type: ignore[arg-type]


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
    train_ds = ClipDataset(tr, [r.artery_prob for r in tr], args.cine_config, True, args.seed, cache)
    train_dl, g = _loader(train_ds, None, args, True)
    eval_dl = DataLoader(ClipDataset(ev or tr, [r.artery_prob for r in (ev or tr)], args.cine_config, False,
                                     cache=cache), batch_size=args.batch_size)
    model = ArteryClassifier(args.widths)
    out = Path(args.logdir) / "artery_weights" / classifier_name(args.fold)
    run = args.run(f"classifier-fold{args.fold}", out,
                   _data_record(args, fold_path(root, args.fold, "train"),
                                {"train_cines": len(tr), "eval_cines": len(ev)}, tr + ev))
    try:
        state, hist = _fit(model, train_dl, lambda m: _eval_loss(m, eval_dl, bce, args), bce, args,
                           f"artery classifier fold {args.fold}", run, {"loader": g, "clips": train_ds.rng})
        return _publish(run, state, out), hist
    except BaseException as exc:
        run.fail(exc)
        raise


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
    p.add_argument("--devices", default="", help="the card's CUDA device id, e.g. 0 (same as --device cuda:0)")
    p.add_argument("--logdir", type=Path, default=Path("./logs/backbone"))
    p.add_argument("--use-weighted-sampler", action="store_true")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--widths", type=int, nargs=4, default=(64, 128, 256, 512),
                   help="R3D-18 layer widths (default = torchvision r3d_18; smaller for reduced models)")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--mse-scale", type=float, default=1.0)
    add_run_arguments(p, device_default="")


def args_from(ns: argparse.Namespace) -> TrainArgs:
    fields = {f.name for f in dataclasses.fields(TrainArgs)}
    kw = {k: v for k, v in vars(ns).items() if k in fields and k != "config"}
    kw["video_size"] = tuple(ns.video_size)
    kw["widths"] = tuple(ns.widths)
    kw["progress"] = not ns.no_progress
    kw["device_name"] = ns.device or ""
    kw["config"] = {k: v for k, v in vars(ns).items() if not callable(v)}
    return TrainArgs(**kw)


STAGES = ("backbone", "head", "classifier", "calibrate")


def build_parser(stage: str) -> argparse.ArgumentParser:
    sp = argparse.ArgumentParser(prog=f"python -m training.syntax.train {stage}",
                                 description=f"Train the CardioSyntax models: {stage}")
    add_common(sp)
    if stage in ("head", "calibrate"):
        sp.add_argument("--variant", choices=VARIANTS, default="lstm_mean")
        sp.add_argument("--backbone-pt-dir", type=Path, default=None)
        sp.add_argument("--backbone-from-pt", action="store_true", default=True)
        sp.add_argument("--rnn-folds-dir", default="rnn_folds")
        sp.add_argument("--hidden", type=int, default=128)
        sp.add_argument("--freeze-backbone", action="store_true")
        sp.add_argument("--max-views", type=int, default=8)
    return sp


@one_line_errors
def main(argv: Sequence[str] | None = None) -> int:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in STAGES:
        p = argparse.ArgumentParser(prog="python -m training.syntax.train", description="Train the CardioSyntax models")
        p.add_argument("stage", choices=STAGES, help="then the stage's options (--help after the stage)")
        p.parse_args(argv[:1])
        return 2
    ns = parse_with_config(build_parser(argv[0]), argv[1:])
    ns.stage = argv[0]
    args = args_from(ns)
    args.device  # a missing device is one line now, not a driver traceback later
    resolve_precision(args.precision, args.device)
    setup_logging(args.logdir)
    if ns.stage == "backbone":
        train_backbone(args)
    elif ns.stage == "head":
        train_head(args)
    elif ns.stage == "classifier":
        train_classifier(args)
    else:
        studies = read_format2(rnn_fold_path(args.dataset_root, args.fold, "eval", args.rnn_folds_dir),
                               args.dataset_root)
        pred = {}
        for side in ("left", "right"):
            model = load_side_models(args.logdir / "full_model_weights", side, [args.fold], args.variant)[0]
            pred[side] = predict_studies(model, studies, side, args.cine_config, args.device)
        coeffs = fit_calibration(pred["left"] + pred["right"], [s.syntax for s in studies])
        update_scaling(args.logdir / "scaling_coeffs.json", args.fold, coeffs)
        log.info("fold %d calibration a=%.4f b=%.4f -> %s", args.fold, coeffs["a"], coeffs["b"],
                 args.logdir / "scaling_coeffs.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

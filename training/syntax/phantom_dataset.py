"""Write phantom studies as a CardioSyntax v2 release folder (DICOM cines + the published JSON formats).

Layout written under ``root``::

    dicom/<study>/<n>.dcm                 multi-frame XA (synth.dicom.write_xa_cine)
    folds/fold{k}_{train,eval}.json       Format 1, one record per left/right cine
    rnn_folds/rnn_fold{k}_{train,eval}.json  Format 2, one record per study
    test_phantom.json                     test format (mean_syntax, expert0..5) for the held-out studies

Paths in the JSON files are written as in the release (``../dicom/...``, relative to the JSON file's
folder) so that the readers' path resolution is exercised.  Folds split studies by index (study i is
in the eval split of fold i mod k).  Phantom "experts" are the phantom truth plus reader noise.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pydicom

from synth.dicom import new_study, write_xa_cine

from .phantom import PhantomStudy

__all__ = ["write_release", "ARTERY_PROB"]

#: artery_prob written for phantom cines (as the authors' classifier would give: confident or not)
ARTERY_PROB = {"left": 0.02, "right": 0.98, "other": 0.5}


def _write_study(root: Path, idx: int, st: PhantomStudy, jpeg_every: int) -> dict[str, Any]:
    ident = new_study(seed=st.seed)
    folder = root / "dicom" / f"study{idx:04d}"
    videos = []
    for n, cine in enumerate(st.cines):
        path = write_xa_cine(cine.frames, folder / f"{n:02d}.dcm", ident, series_number=n + 1,
                             series_description=f"Coronary {n + 1}", primary_angle=cine.primary_angle,
                             secondary_angle=cine.secondary_angle, jpeg=bool(jpeg_every) and n % jpeg_every == 1,
                             seed=st.seed)
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        videos.append({"series_uid": str(ds.SeriesInstanceUID), "sop_uid": str(ds.SOPInstanceUID),
                       "path": f"../dicom/{folder.name}/{path.name}", "shape": list(cine.frames.shape),
                       "artery": 1 if cine.artery == "right" else 0, "artery_prob": ARTERY_PROB[cine.artery],
                       "_kind": cine.artery})
    return {"study_uid": str(ident.study_instance_uid),
            "manufacturer": "CardioNode phantom", "device_model": "training.syntax.phantom",
            "syntax": st.syntax, "syntax_left": st.syntax_left, "syntax_right": st.syntax_right,
            "bin_syntax": int(st.syntax > 22), "videos": videos}


def _format2(rec: dict[str, Any]) -> dict[str, Any]:
    clean = [{k: v for k, v in vid.items() if k != "_kind"} for vid in rec["videos"]]
    out = {k: v for k, v in rec.items() if k != "videos"}
    out["videos"] = clean
    for kind in ("left", "right", "other"):
        out[f"videos_{kind}"] = [c for c, v in zip(clean, rec["videos"]) if v["_kind"] == kind]
    return out


def _format1(rec: dict[str, Any]) -> list[dict[str, Any]]:
    head = {k: rec[k] for k in ("study_uid",)}
    tail = {k: rec[k] for k in ("syntax", "syntax_left", "syntax_right", "bin_syntax", "manufacturer", "device_model")}
    return [{**head, **{k: v for k, v in vid.items() if k != "_kind"}, **tail} for vid in rec["videos"]]


def write_release(root: str | Path, train: Sequence[PhantomStudy], test: Sequence[PhantomStudy] = (), *,
                  folds: int = 5, jpeg_every: int = 0, expert_sd: float = 2.0, seed: int = 0) -> Path:
    """Write ``train`` studies (split into ``folds``) and ``test`` studies as a release folder."""
    root = Path(root)
    (root / "folds").mkdir(parents=True, exist_ok=True)
    (root / "rnn_folds").mkdir(parents=True, exist_ok=True)
    recs = [_write_study(root, i, st, jpeg_every) for i, st in enumerate(train)]
    for k in range(folds):
        for split in ("train", "eval"):
            chosen = [r for i, r in enumerate(recs) if (i % folds == k) == (split == "eval")]
            (root / "folds" / f"fold{k}_{split}.json").write_text(
                json.dumps([v for r in chosen for v in _format1(r)], indent=1))
            (root / "rnn_folds" / f"rnn_fold{k}_{split}.json").write_text(
                json.dumps([_format2(r) for r in chosen], indent=1))
    if test:
        rng = np.random.default_rng(seed)
        out = []
        for j, st in enumerate(test):
            r = _format2(_write_study(root, len(train) + j, st, jpeg_every))
            for key in ("videos_left", "videos_right", "videos_other"):  # test files sit in the root
                r[key] = [dict(v, path=v["path"].removeprefix("../")) for v in r[key]]
            del r["videos"], r["bin_syntax"]  # as in the card's test example
            experts = [float(max(0.0, round(2 * (st.syntax + rng.normal(0, expert_sd))) / 2)) for _ in range(6)]
            r.update({f"expert{i}": e for i, e in enumerate(experts)})
            r["mean_syntax"] = float(np.mean(experts))
            out.append(r)
        (root / "test_phantom.json").write_text(json.dumps(out, indent=1))
    from training.datasets.marker import write_marker  # generated data: exports stay "synthetic"

    write_marker(root, generator="training.syntax.phantom", layout="CardioSyntax v2",
                 cases={"train": len(train), "test": len(test)})
    return root

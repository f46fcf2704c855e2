"""Sample studies to try a node with: ``cardionode sample xa|ct|mr --out DIR``.

A new user has a node running and no study to send.  These are synthetic
phantoms, written as DICOM by the same generators the bundled models were
trained on (``training.syntax.phantom``, ``training.calcium.phantom``,
``training.myops.phantom``): not patient data, and whatever the node reports on
them is a phantom result.  Every file says so in its patient name
(``PHANTOM^...``) and study description.  The files are written by
:mod:`synth.dicom`.  Only numpy, scipy and pydicom are needed, so this works on
the base install (no torch, no train extra).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

__all__ = ["SAMPLES", "write_sample", "register"]


def _uid_seed(kind: str, seed: int) -> int:
    """Seed of the UIDs: one study per (kind, seed), so an XA and a CT sample never share a Study UID."""
    return seed * len(SAMPLES) + sorted(SAMPLES).index(kind)


def _xa(out: Path, seed: int) -> list[Path]:
    from synth.dicom import new_study, write_xa_cine
    from training.syntax.phantom import make_study

    st = make_study(seed, 96)
    uid_seed = _uid_seed("xa", seed)
    ident = new_study(seed=uid_seed)
    return [write_xa_cine(c.frames, out / f"{n:02d}.dcm", ident, series_number=n + 1, seed=uid_seed,
                          primary_angle=c.primary_angle, secondary_angle=c.secondary_angle)
            for n, c in enumerate(st.cines)]


def _ct(out: Path, seed: int) -> list[Path]:
    from synth.dicom import new_study, write_ct_series
    from training.calcium.phantom import make_phantom

    ph = make_phantom(seed, shape=(56, 256, 256), spacing=(3.0, 1.4, 1.4), plaque_shape="box", noise_hu=10.0)
    uid_seed = _uid_seed("ct", seed)
    return write_ct_series(ph.hu, ph.spacing, out, new_study(seed=uid_seed), origin_xyz=ph.origin_xyz,
                           seed=uid_seed, series_description="Phantom chest CT 3.0 mm")


def _mr(out: Path, seed: int) -> list[Path]:
    from synth.dicom import new_study
    from training.myops.phantom import make_phantom, write_dicom_study

    case = make_phantom(seed, with_scar=True)
    uid_seed = _uid_seed("mr", seed)
    return write_dicom_study(case, out, seed=uid_seed, study=new_study(seed=uid_seed))


#: kind -> (what it is, which pipeline of the shipped config routes it, writer)
SAMPLES: dict[str, tuple[str, str, Callable[[Path, int], list[Path]]]] = {
    "xa": ("coronary angiography, one multi-frame XA file per cine", "syntax", _xa),
    "ct": ("non-gated chest CT, 56 slices of 256 x 256", "calcium", _ct),
    "mr": ("cardiac MR, bSSFP + LGE + T2 series", "myops", _mr),
}


def write_sample(kind: str, out: str | Path, seed: int = 1) -> list[Path]:
    """Write one phantom study of ``kind`` (``xa``, ``ct``, ``mr``) under ``out``; returns the files."""
    if kind not in SAMPLES:
        raise ValueError(f"unknown sample {kind!r} (one of {', '.join(SAMPLES)})")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    return sorted(SAMPLES[kind][2](folder, seed))


def cmd_sample(args: argparse.Namespace) -> int:
    files = write_sample(args.kind, args.out, args.seed)
    import pydicom

    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    what, pipeline, _ = SAMPLES[args.kind]
    print(json.dumps({"kind": args.kind, "what": f"synthetic phantom ({what}), not patient data",
                      "pipeline": pipeline, "study_uid": study_uid, "files": len(files), "out": str(args.out)},
                     indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``cardionode sample KIND [--out DIR] [--seed N]``."""
    p = subparsers.add_parser("sample", help="write a synthetic phantom study (xa, ct, mr) to send to the node")
    p.add_argument("kind", choices=sorted(SAMPLES), help="xa: SYNTAX (XA), ct: calcium (CT), mr: myops (CMR)")
    p.add_argument("--out", default=None, help="folder for the files (default ./sample-KIND)")
    p.add_argument("--seed", type=int, default=1, help="phantom seed: the same seed writes the same study")
    p.set_defaults(func=lambda a: cmd_sample(argparse.Namespace(**{**vars(a), "out": a.out or f"sample-{a.kind}"})))

"""COCA reader, YOLO conversion and Table 1 stats on a small generated COCA-format folder."""
import subprocess
import sys

import numpy as np
import pytest

from tests.support.calcium import make_coca_folder
from training.calcium.coca import CocaDataset, CocaError, read_split_csv
from training.calcium.stats import table1
from training.calcium.yolo import convert

EXAMS = {"9": "train", "12": "train", "40": "test"}


@pytest.fixture(scope="module")
def coca(tmp_path_factory):
    root = tmp_path_factory.mktemp("coca")
    phantoms = make_coca_folder(root, EXAMS, crop_exam="12")
    return root, phantoms


def test_reader_maps_header_names_and_aligns_with_dicom(coca):
    root, phantoms = coca
    ds = CocaDataset(root)
    assert ds.exams() == ["9", "12", "40"]
    assert ds.exams("test") == ["40"]
    seg = ds.segmentation("9")
    assert {s.name: (s.label_value, s.class_value) for s in seg.segments}["Right Coronary"] == (1, 8)
    # full-extent file: class map equals the phantom labels voxel for voxel (x,y,z -> z,y,x transposed)
    np.testing.assert_array_equal(seg.class_map(), phantoms["9"].labels)
    cases = {c[0]: c for c in ds.cases()}
    for exam, ph in phantoms.items():  # includes the cropped NRRD of exam 12, placed by its origin
        _, hu, labels, zpos, sp = cases[exam]
        np.testing.assert_array_equal(labels, ph.labels)
        np.testing.assert_array_equal(hu, ph.hu)
        assert sp == pytest.approx(ph.spacing[1:])
    assert ds.segmentation("12").labels.shape != phantoms["12"].labels.shape


def test_split_csv_variants(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("1,train\n2,test\n3,val\n")
    assert read_split_csv(p) == {"1": "train", "2": "test", "3": "test"}
    p.write_text("split,exam\ntrain,a.nrrd\n")
    assert read_split_csv(p) == {"a": "train"}
    p.write_text("exam,split\n1,holdout\n")
    with pytest.raises(CocaError, match="line 2"):
        read_split_csv(p)


def _expected_boxes(ph, per_class):
    rows, cols = ph.labels.shape[1:]
    out = {}
    for p in ph.plaques:
        z0, z1, y0, y1, x0, x1 = p.index_box
        cls = p.label - 1 if per_class else 0
        for z in range(z0, z1):
            out.setdefault(z, []).append(
                f"{cls} {(x0 + x1) / 2 / cols:.6f} {(y0 + y1) / 2 / rows:.6f} "
                f"{(x1 - x0) / cols:.6f} {(y1 - y0) / rows:.6f}")
    return out


@pytest.mark.parametrize("per_class", [False, True])
def test_yolo_conversion_matches_hand_boxes(coca, tmp_path, per_class):
    root, phantoms = coca
    rep = convert(root, tmp_path / "yolo", per_class=per_class, labels_only=True)  # the published script's layout
    assert rep.exams == {"train": 2, "test": 1}
    assert rep.files == sum(CocaDataset(root).segmentation(e).labels.shape[0] for e in EXAMS)
    ph = phantoms["9"]
    files = sorted((tmp_path / "yolo" / "train_labels").glob("9_*.txt"))
    assert len(files) == ph.labels.shape[0]  # one file per slice, empty ones included
    expected = _expected_boxes(ph, per_class)
    for z in range(ph.labels.shape[0]):
        lines = (tmp_path / "yolo" / "train_labels" / f"9_{z + 1}.txt").read_text().splitlines()
        assert sorted(lines) == sorted(expected.get(z, []))
    assert len(list((tmp_path / "yolo" / "val_labels").glob("40_*.txt"))) == phantoms["40"].labels.shape[0]


def test_stats_table1(coca):
    root, phantoms = coca
    rows, n = table1(root)
    assert n == 3
    by = {r.category: r for r in rows}
    total = sum(len(ph.plaques) for ph in phantoms.values())
    for name, cls in [("Thoracic Aorta", 6), ("Right Coronary", 8)]:
        vols = [(p.index_box[1] - p.index_box[0]) * (p.index_box[3] - p.index_box[2])
                * (p.index_box[5] - p.index_box[4]) * float(np.prod(ph.spacing))
                for ph in phantoms.values() for p in ph.plaques if p.label == cls]
        pats = sum(1 for ph in phantoms.values() if any(p.label == cls for p in ph.plaques))
        r = by[name]
        assert r.segmentations == len(vols) and r.patients == pats
        assert r.mean_mm3 == pytest.approx(np.mean(vols))
        assert r.sd_mm3 == pytest.approx(np.std(vols, ddof=1) if len(vols) > 1 else 0.0)
        assert r.per_scan == pytest.approx(len(vols) / pats)
        assert r.dataset_pct == pytest.approx(100 * len(vols) / total)
        assert r.patients_pct == pytest.approx(100 * pats / 3)


def test_cli_modules_run(coca, tmp_path):
    root, _ = coca
    out = subprocess.run([sys.executable, "-m", "training.calcium.stats", str(root)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "| Thoracic Aorta |" in out.stdout and "3 scans read" in out.stdout
    out = subprocess.run([sys.executable, "-m", "training.calcium.yolo", str(root), "--out", str(tmp_path / "y")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "split file lists 3 exams (2 train / 1 test)" in out.stdout


def test_console_script_datasets(coca, tmp_path):
    """`cardionode datasets coca-stats | coca-to-yolo` through the installed console script (node/cli.py mounts
    training.calcium.cli.register when the train extra is importable)."""
    import shutil
    from pathlib import Path

    exe = shutil.which("cardionode", path=str(Path(sys.executable).parent)) or shutil.which("cardionode")
    if exe is None:
        pytest.skip("cardionode console script not installed (pip install -e .)")
    root, phantoms = coca
    out = subprocess.run([exe, "datasets", "coca-stats", str(root)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in out.stdout.splitlines()
            if line.startswith("| ") and "Category" not in line}
    n_aorta = sum(1 for ph in phantoms.values() for p in ph.plaques if p.label == 6)
    assert rows["Thoracic Aorta"] == str(n_aorta) and "3 scans read" in out.stdout
    out = subprocess.run([exe, "datasets", "coca-to-yolo", str(root), "--out", str(tmp_path / "y")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert len(list((tmp_path / "y" / "train" / "labels").glob("9_*.txt"))) == phantoms["9"].labels.shape[0]
    assert len(list((tmp_path / "y" / "val" / "images").glob("40_*.png"))) == phantoms["40"].labels.shape[0]
    bad = subprocess.run([exe, "datasets", "coca-stats", str(tmp_path / "missing")], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "error" in bad.stderr


def test_alias_table_from_json(coca, tmp_path):
    """Segment names map onto class values through a configurable table (--aliases FILE.json)."""
    import json

    from training.calcium.coca import load_aliases

    root, _ = coca
    table = {"Right Coronary": 1, "Posterior Descending": 8}  # deliberately swapped; other names unmapped
    (tmp_path / "a.json").write_text(json.dumps(table))
    seg = CocaDataset(root, aliases=load_aliases(tmp_path / "a.json")).segmentation("9")
    got = {s.name: s.class_value for s in seg.segments}
    assert got["Right Coronary"] == 1 and got["Posterior Descending"] == 8 and got["Thoracic Aorta"] is None
    (tmp_path / "bad.json").write_text(json.dumps({"Right Coronary": 9}))
    with pytest.raises(CocaError, match="1..8"):
        load_aliases(tmp_path / "bad.json")
    out = subprocess.run([sys.executable, "-m", "training.calcium.yolo", str(root), "--out", str(tmp_path / "y"),
                          "--per-class", "--aliases", str(tmp_path / "a.json")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "no class mapping" in out.stderr  # unmapped names cannot get a class id

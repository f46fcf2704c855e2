"""CardioSyntax v2 readers on small generated release folders (Format 1, Format 2, test format),
with real DICOM cines (JPEG-compressed ones included) resolved against the dataset root."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.syntax.data import (
    DatasetError,
    fold_path,
    load_video,
    read_format1,
    read_format2,
    read_test,
    rnn_fold_path,
)
from training.syntax.phantom import make_study
from training.syntax.phantom_dataset import write_release


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[Path, list, list]:
    root = tmp_path_factory.mktemp("cardiosyntax")
    train = [make_study(100 + i, size=32, n_left=2, n_right=1, n_other=int(i == 0)) for i in range(4)]
    test = [make_study(900 + i, size=32, n_left=1, n_right=1, n_other=0) for i in range(2)]
    write_release(root, train, test, folds=2, jpeg_every=2)
    return root, train, test


def test_format1_records_paths_and_cines(release) -> None:
    root, train, _ = release
    recs = read_format1(fold_path(root, 0, "train"), root)
    # fold 0 train = studies 1 and 3 (study i is in eval of fold i % 2)
    fold0 = json.loads((root / "rnn_folds/rnn_fold0_train.json").read_text())
    assert {r.study_uid for r in recs} == {fold0[j]["study_uid"] for j in range(2)}
    assert len(recs) == len(train[1].cines) + len(train[3].cines)
    for r in recs:
        assert r.path.is_file() and r.path.is_absolute()
        frames = load_video(r.path)
        assert frames.dtype == np.uint8 and frames.shape == r.shape
        assert r.artery in (0, 1)
    st = train[1]
    r0 = [r for r in recs if r.study_uid == recs[0].study_uid]
    assert r0[0].syntax == pytest.approx(st.syntax) and r0[0].artery_score("left") == pytest.approx(st.syntax_left)
    # the JPEG-compressed cine (every 2nd) decodes to nearly the written frames
    exact = {tuple(c.frames.shape): c.frames for c in st.cines}
    decoded = load_video(r0[1].path)
    assert np.abs(decoded.astype(int) - exact[decoded.shape].astype(int)).mean() < 4


def test_format2_groups_and_test_format(release) -> None:
    root, train, test = release
    studies = read_format2(rnn_fold_path(root, 0, "eval"), root)
    assert len(studies) == 2
    s0 = studies[0]
    # study 0 has an 'other'
    assert len(s0.videos_left) == 2 and len(s0.videos_right) == 1 and len(s0.videos_other) == 1
    assert len(s0.videos) == 4 and s0.syntax == pytest.approx(train[0].syntax)
    assert all(v.artery == 1 for v in s0.videos_right)
    tests = read_test(root / "test_phantom.json", root)
    assert len(tests) == 2 and len(tests[0].experts) == 6
    assert tests[0].mean_syntax == pytest.approx(np.mean(tests[0].experts))
    assert tests[0].bin_syntax is None and len(tests[0].videos) == 2  # 'videos' rebuilt from the groups
    assert load_video(tests[1].videos_left[0].path).shape[1:] == (32, 32)


def test_reader_errors_name_file_record_and_key(release, tmp_path) -> None:
    root, _, _ = release
    data = json.loads(fold_path(root, 0, "eval").read_text())
    data[1]["artery"] = 3
    bad = root / "folds" / "broken.json"  # beside the real files so that '../dicom/...' resolves
    bad.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"record 1: key 'artery': expected 0 \(left\) or 1 \(right\)"):
        read_format1(bad, root)
    data[1]["artery"] = 0
    data[1]["path"] = "../nowhere/x.dcm"
    bad.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="record 1: key 'path': '../nowhere/x.dcm' not found"):
        read_format1(bad, root)
    t = json.loads((root / "test_phantom.json").read_text())
    del t[0]["expert3"]
    (tmp_path / "t.json").write_text(json.dumps(t))
    with pytest.raises(DatasetError, match="expected expert0..expert5"):
        read_test(tmp_path / "t.json", root)

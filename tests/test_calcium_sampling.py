"""The calcium training sampler's hard negatives: crops centred on unlabelled pixels of an HU band."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.calcium.preprocess import PreprocessConfig
from training.calcium.data import SPLIT_NEGATIVES, SliceSet, level, sample_batch

CFG = PreprocessConfig()


def _set(values: dict[tuple[int, int], float], labels: dict[tuple[int, int], int] | None = None) -> SliceSet:
    """One 64 x 64 slice of 40 HU with the given HU per pixel (all channels) and labels."""
    x = np.full((1, 3, 64, 64), level(40.0, CFG), np.float16)
    y = np.zeros((1, 64, 64), np.uint8)
    for (r, c), hu in values.items():
        x[0, :, r, c] = level(hu, CFG)  # the window saturates at hu_max
    for (r, c), lab in (labels or {}).items():
        y[0, r, c] = lab
    return SliceSet(x, y)


def test_dense_finds_the_unlabelled_pixels_of_each_band_only():
    s = _set({(5, 5): 150.0, (10, 10): 600.0, (20, 20): 2500.0, (30, 30): 700.0, (40, 40): 350.0},
             labels={(30, 30): 6})  # a labelled 700 HU plaque is never a negative
    found = {(lo, hi): {(int(r), int(c)) for _, r, c in s.dense(level(lo), None if hi is None else level(hi))}
             for _, lo, hi in SPLIT_NEGATIVES}
    assert found[(400.0, 1200.0)] == {(10, 10)}
    assert found[(1200.0, None)] == {(20, 20)}  # metal, saturated by the window
    assert found[(130.0, 400.0)] == {(5, 5), (40, 40)}


@pytest.mark.parametrize("band, pixel", [((130.0, 400.0), (50, 9)), ((1200.0, None), (12, 47))])
def test_every_negative_crop_holds_its_pixel(band, pixel):
    """With all crops drawn from one band that has one pixel, every crop contains that pixel (jitter < crop / 2)."""
    s = _set({pixel: 250.0 if band[0] == 130.0 else 3000.0, (33, 33): 800.0})
    rng = np.random.default_rng(0)
    x, y = sample_batch([s], 32, 24, rng, p_focus=0.0, negatives=[(1.0, *band)], cfg=CFG)
    target = level(250.0 if band[0] == 130.0 else CFG.hu_max, CFG)
    assert all(np.isclose(crop[1], target, atol=1e-2).sum() == 1 for crop in x)
    assert not (y & 15).any()


def test_shares_above_one_are_refused():
    with pytest.raises(ValueError, match="more than 1"):
        sample_batch([_set({})], 2, 16, np.random.default_rng(0), p_focus=0.6,
                     negatives=[(0.3, 400.0, None), (0.2, 130.0, 400.0)])

"""SYNTAX cine preprocessing options: frames spread over the cine, percentile stretch, long 1024 cines."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.syntax.preprocess import (IMAGENET_MEAN, IMAGENET_STD, CineConfig, PreprocessError, preprocess_cine,
                                       spread_indices)


def test_spread_indices_cover_the_whole_cine() -> None:
    assert spread_indices(120, 4).tolist() == [15, 45, 75, 105]
    assert spread_indices(15, 4).tolist() == [1, 5, 9, 13]
    assert spread_indices(3, 4).tolist() == [0, 1, 1, 2]  # shorter than the clip: frames repeat in order
    assert spread_indices(120, 4, 0.0).tolist() == [0, 30, 60, 90]
    assert spread_indices(120, 4, 0.999).tolist() == [29, 59, 89, 119]
    with pytest.raises(PreprocessError):
        spread_indices(0, 4)


def test_manifest_round_trip_and_defaults() -> None:
    cfg = CineConfig(frames=4, height=48, width=48, clip="spread", intensity="percentile")
    pre = cfg.to_manifest()
    assert pre["clip"] == "spread" and pre["intensity"] == "percentile"
    assert CineConfig.from_manifest(pre) == cfg
    old = CineConfig.from_manifest({"frames": 4, "size": [96, 96]})  # manifests written before the options
    assert (old.clip, old.intensity) == ("centre", "1/255")
    assert "intensity" not in old.to_manifest()
    with pytest.raises(PreprocessError, match="clip"):
        CineConfig.from_manifest({"frames": 4, "size": [96, 96], "clip": "random"})


def test_spread_clip_sees_contrast_of_short_and_long_runs_alike() -> None:
    """A run is dark (contrast) only in its second half: 15 or 120 frames, the spread clip sees the same."""
    cfg = CineConfig(frames=4, height=8, width=8, clip="spread")
    for n in (15, 120):
        cine = np.full((n, 32, 32), 200, np.uint8)
        cine[n // 2:, 10:20, :] = 40
        x = preprocess_cine(cine, cfg)
        dark = [bool((x[0, f] < x[0, f].max() - 1).any()) for f in range(4)]
        assert dark == [False, False, True, True], (n, dark)


def test_percentile_stretch_makes_window_and_bit_depth_irrelevant() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (6, 64, 64)).astype(np.uint8)
    cfg = CineConfig(frames=4, height=16, width=16, clip="spread", intensity="percentile")
    a = preprocess_cine(base, cfg)
    washed = (base // 4 + 150).astype(np.uint8)  # low contrast, bright window
    b = preprocess_cine(washed, cfg)
    assert np.abs(a - b).max() < 0.15
    deep = (base.astype(np.uint16) * 16)  # 12-bit storage of the same image
    np.testing.assert_allclose(preprocess_cine(deep, cfg), a, atol=0.05)


def test_long_1024_cine_only_converts_the_sampled_frames() -> None:
    cine = np.zeros((120, 1024, 1024), np.uint16)
    cine[:, 400:600, 400:600] = 4095
    cine[-1] = 0  # the peak is taken over the whole cine, not only the sampled frames
    x = preprocess_cine(cine, CineConfig(frames=4, height=48, width=48, clip="spread"))
    assert x.shape == (3, 4, 48, 48) and x.dtype == np.float32
    mid = x[0, 0, 24, 24] * 0.229 + 0.485
    assert mid == pytest.approx(1.0, abs=1e-3)


def test_minip_clip_shows_every_vessel_that_has_filled_whatever_the_timing() -> None:
    """Two vessels opacified one after the other (the first washes out): the last frame of the running
    minimum projection shows both, for 15 and 120 frames alike; frames never get brighter."""
    cfg = CineConfig(frames=4, height=16, width=16, clip="minip", samples=16)
    for n in (15, 120):
        cine = np.full((n, 64, 64), 200, np.uint8)
        cine[n // 4:n // 2, 8:16, :] = 40  # vessel A, washed out by mid-run
        cine[n // 2:3 * n // 4, 40:48, :] = 40  # vessel B, later
        x = preprocess_cine(cine, cfg)[0]
        bg = x[-1, 8].mean()  # a row no vessel crosses
        assert x[-1, 3].mean() < bg - 1 and x[-1, 11].mean() < bg - 1, n  # both vessels in the last frame
        assert x[0, 11].mean() > x[-1, 11].mean() + 1, n  # vessel B not yet in the first one
        assert (np.diff(x, axis=0) <= 1e-6).all()
    assert cfg.to_manifest()["samples"] == 16 and CineConfig.from_manifest(cfg.to_manifest()) == cfg
    with pytest.raises(PreprocessError, match="samples"):
        CineConfig(frames=4, clip="minip", samples=2)


def test_black_tophat_keeps_thin_dark_lines_and_drops_wide_shading() -> None:
    """A 1-px dark line on a dark half-plane (diaphragm-like) and a bright ramp: only the line is left."""
    img = np.tile(np.linspace(150, 250, 64, dtype=np.float32), (64, 1))
    img[40:, :] -= 100  # wide dark region
    img[:, 20] -= 60  # thin vessel
    cfg = CineConfig(frames=1, height=64, width=64, filter="tophat", tophat_px=5)
    x = preprocess_cine(img[None].astype(np.uint8), cfg)[0, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    assert x[:, 20].min() > 0.15  # the line, everywhere along it
    rest = np.delete(x, [19, 20, 21], axis=1)
    assert np.abs(rest[5:35]).max() < 0.02 and np.abs(rest[45:]).max() < 0.02  # shading and the wide region gone
    assert CineConfig.from_manifest(cfg.to_manifest()) == cfg
    with pytest.raises(PreprocessError, match="tophat_px"):
        CineConfig(filter="tophat")


def test_subtraction_removes_what_stays_still_and_keeps_what_fills() -> None:
    """``subtract: max``: a dark wire present in every frame leaves the clip, a vessel that fills half-way
    through stays; without subtraction both show.  A run with contrast in every frame keeps nothing."""
    n = 40
    cine = np.full((n, 128, 128), 200, np.uint8)
    cine[:, :, 30:32] = 60  # wire / rib edge: dark, thin, still
    cine[n // 2:, 90:92, :] = 60  # vessel: thin, dark once filled
    base = dict(frames=2, height=64, width=64, clip="minip", samples=16, filter="tophat", tophat_px=7)
    plain = preprocess_cine(cine, CineConfig(**base))[0, -1]
    sub_cfg = CineConfig(**base, subtract="max")
    sub = preprocess_cine(cine, sub_cfg)[0, -1]
    wire, vessel, empty = (slice(20, 40), slice(15, 16)), (slice(45, 46), slice(0, 10)), (slice(5, 10), slice(50, 60))
    assert plain[wire].max() > plain[empty].max() + 1 and plain[vessel].min() > plain[empty].max() + 1
    assert sub[wire].max() <= sub[empty].max() + 1e-5  # the still wire is gone
    assert sub[vessel].min() > sub[empty].max() + 1  # the filling vessel stays
    assert sub_cfg.to_manifest()["subtract"] == "max" and CineConfig.from_manifest(sub_cfg.to_manifest()) == sub_cfg
    assert "subtract" not in CineConfig(**base).to_manifest()
    always = np.full((n, 128, 128), 200, np.uint8)
    always[:, 90:92, :] = 60  # contrast in every frame: nothing changes, nothing stays
    flat = preprocess_cine(always, sub_cfg)[0, -1]
    assert np.ptp(flat) < 1e-5
    with pytest.raises(PreprocessError, match="subtract"):
        CineConfig(**base, subtract="min")

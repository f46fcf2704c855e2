"""SYNTAX cine preprocessing options: frames spread over the cine, percentile stretch, long 1024 cines."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.syntax.preprocess import (IMAGENET_MEAN, IMAGENET_STD, CineConfig, PreprocessError, preprocess_cine,
                                       read_indices, register_shifts, resize_frames, spread_indices)


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


def _drifting_run(n: int, shifts: np.ndarray, fill_from: int) -> np.ndarray:
    """(n, 256, 256) uint8 run whose whole background (a diaphragm edge, a still wire, ribs) drifts by
    ``shifts`` (dy, dx per frame, in pixels at 256), with a thin vessel that fills from ``fill_from``."""
    from scipy import ndimage

    yy, xx = np.mgrid[0:256, 0:256].astype(np.float32)
    bg = 200.0 - 80.0 / (1.0 + np.exp(np.clip(-(yy - 180.0 - 0.004 * (xx - 128.0) ** 2) / 2.0, -50, 50)))  # dome
    bg[:, 60:63] -= 90.0  # a wire
    for y0 in (40.0, 90.0):  # ribs
        bg -= 40.0 * np.exp(-((yy - y0 - 0.1 * xx) ** 2) / 8.0)
    out = np.empty((n, 256, 256), np.uint8)
    for k in range(n):
        f = ndimage.shift(bg, shifts[k], order=1, mode="nearest")
        if k >= fill_from:
            f[120:124, 100:220] -= 70.0  # the vessel fills; it does not move with the background
        out[k] = np.clip(np.rint(f), 0, 255).astype(np.uint8)
    return out


def test_registration_shifts_each_frame_back_before_the_subtraction() -> None:
    """``register: shift``: a background drifting by up to 4 px (breathing) is shifted back to within a
    quarter pixel, so its edges leave the subtracted clip while the filling vessel stays; without
    registration the diaphragm, wire and ribs stay.  A still run gets no shift; the vessel filling
    does not pull the shift (only brightening counts)."""
    n = 32
    drift = np.stack([np.linspace(0.0, 3.6, n), np.linspace(0.0, -2.2, n)], axis=1)  # pixels at 256
    cine = _drifting_run(n, drift, fill_from=n // 2)
    base = dict(frames=2, height=64, width=64, clip="minip", samples=16, filter="tophat", tophat_px=7,
                subtract="max")
    reg_cfg = CineConfig(**base, register="shift", register_px=4)
    picked = cine[read_indices(n, reg_cfg)].astype(np.float32) / 255.0
    shifts = register_shifts(resize_frames(picked, 128, 128), 4)
    truth = drift[read_indices(n, reg_cfg)] / 2.0  # at twice the model's size: 128
    rel = (shifts - shifts[0]) - (truth - truth[0])  # the mask's own place is arbitrary, the differences are not
    assert np.abs(rel).max() < 0.25, (shifts, truth)
    plain = preprocess_cine(cine, CineConfig(**base))[0, -1]
    reg = preprocess_cine(cine, reg_cfg)[0, -1]
    vessel, empty, bone = (slice(30, 31), slice(28, 52)), (slice(5, 10), slice(40, 60)), np.zeros((64, 64), bool)
    bone[:, 14:17] = True  # the wire's column
    bone[42:48, 5:25] = True  # the diaphragm's edge
    for clip in (plain, reg):  # the vessel is there either way (normalised units over the empty background)
        assert clip[vessel].min() > clip[empty].max() + 0.5
    moving_edges = plain[bone].max() - plain[empty].max()
    assert moving_edges > 0.5  # without registration the moving edges stay
    assert reg[bone].max() - reg[empty].max() < 0.3 * moving_edges
    assert reg[bone].mean() - reg[empty].max() < 0.3 * (plain[bone].mean() - plain[empty].max())
    still = _drifting_run(n, np.zeros((n, 2)), fill_from=n // 2)
    s_shifts = register_shifts(resize_frames(still[read_indices(n, reg_cfg)].astype(np.float32) / 255.0,
                                                128, 128), 4)
    assert np.abs(s_shifts).max() < 0.1
    assert CineConfig.from_manifest(reg_cfg.to_manifest()) == reg_cfg
    assert reg_cfg.to_manifest()["register"] == "shift" and "register" not in CineConfig(**base).to_manifest()
    with pytest.raises(PreprocessError, match="register"):
        CineConfig(**{**base, "subtract": "none"}, register="shift", register_px=4)
    with pytest.raises(PreprocessError, match="register"):
        CineConfig(**base, register="affine", register_px=4)

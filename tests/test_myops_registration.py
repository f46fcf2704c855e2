"""Slice registration: the optional B-spline refinement runs inside the same myocardial mask as the affine."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from pipelines.myops.registration import RegistrationConfig, register_slice


def _disc(shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.float32)


def test_bspline_refinement_uses_the_fixed_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    masks: list[tuple[int, ...]] = []

    class Recording(sitk.ImageRegistrationMethod):
        def SetMetricFixedMask(self, mask: sitk.Image) -> None:
            masks.append(tuple(mask.GetSize()))
            super().SetMetricFixedMask(mask)

    monkeypatch.setattr(sitk, "ImageRegistrationMethod", Recording)
    fixed = 100.0 * _disc((48, 48), 24, 24, 10) + 20.0 * _disc((48, 48), 24, 24, 18)
    moving = 100.0 * _disc((48, 48), 26, 23, 10) + 20.0 * _disc((48, 48), 26, 23, 18)
    mask = _disc((48, 48), 24, 24, 12) > 0
    cfg = RegistrationConfig(deformable=True, iterations=20, mask_dilation_mm=2.0)
    out, transform = register_slice(fixed, moving, mask, 1.0, cfg)
    assert out.shape == fixed.shape and transform.accepted
    assert masks == [(48, 48), (48, 48)], "the affine and the B-spline stage each get the myocardial mask"

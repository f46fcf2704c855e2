"""Slice-wise 2D registration of one sequence onto the anchor (LGE), guided by a myocardial prior.

Per slice: a 2D affine transform (rotation, scaling, shear, translation; SimpleITK) maximising
Mattes mutual information (the sequences have different contrasts) inside the dilated myocardial
prior, coarse-to-fine (shrink 2, 1).  A result that is implausible (|log det| > 0.3 or a shift above
``max_shift_mm``) is replaced by the identity and logged, so a bad slice cannot wreck the input.

Optional deformable refinement (``deformable=True``): a coarse B-spline (``bspline_mesh`` control
points per axis) on top of the affine, standing in for the card's VoxelMorph step (no learned
model to ship).  It is off by default: on our phantoms the misalignment is affine by construction,
so it cannot help there, and on real data it should be enabled only after it is shown to raise the
held-out Dice.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from scipy import ndimage

if TYPE_CHECKING:  # SimpleITK is imported lazily: not every pipeline needs it
    import SimpleITK as sitk

__all__ = ["RegistrationConfig", "SliceTransform", "register_slice", "register_stack"]

log = logging.getLogger("cardionode.myops.registration")


@dataclasses.dataclass(frozen=True)
class RegistrationConfig:
    enabled: bool = True
    iterations: int = 120
    histogram_bins: int = 32
    mask_dilation_mm: float = 10.0
    max_shift_mm: float = 20.0
    deformable: bool = False
    bspline_mesh: int = 4
    threads: int = 1  # deterministic results (and the node's CPUs are shared)


@dataclasses.dataclass(frozen=True)
class SliceTransform:
    """Maps anchor-grid points (x, y mm, grid origin at pixel (0, 0)) to the moving slice's points."""

    matrix: npt.NDArray[np.float64]  # 2x2
    translation: npt.NDArray[np.float64]  # 2
    centre: npt.NDArray[np.float64]  # 2
    accepted: bool = True
    deformable: bool = False

    def apply(self, xy: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Affine part applied to (n, 2) points: A (p - c) + c + t."""
        points = np.asarray(xy, dtype=np.float64)
        return (points - self.centre) @ self.matrix.T + self.centre + self.translation

    @classmethod
    def identity(cls, accepted: bool = True) -> "SliceTransform":
        return cls(np.eye(2), np.zeros(2), np.zeros(2), accepted=accepted)


def _image(arr: npt.NDArray[np.generic], spacing: float) -> sitk.Image:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(arr, dtype=np.float32))
    img.SetSpacing((spacing, spacing))
    return img


def register_slice(fixed: npt.NDArray[np.floating], moving: npt.NDArray[np.floating],
                   mask: npt.NDArray[np.bool_] | None, spacing: float,
                   cfg: RegistrationConfig = RegistrationConfig()) -> tuple[npt.NDArray[np.float32], SliceTransform]:
    """Register one moving slice onto the fixed slice; returns (moving resampled on fixed, transform)."""
    import SimpleITK as sitk

    if not cfg.enabled or float(moving.std()) < 1e-6 or float(fixed.std()) < 1e-6:
        return moving.astype(np.float32), SliceTransform.identity(accepted=cfg.enabled)
    f_img, m_img = _image(fixed, spacing), _image(moving, spacing)
    centre = np.array([(fixed.shape[1] - 1) / 2.0, (fixed.shape[0] - 1) / 2.0]) * spacing
    reg = sitk.ImageRegistrationMethod()
    reg.SetNumberOfThreads(cfg.threads)
    fixed_mask: sitk.Image | None = None
    if mask is not None and mask.any():
        it = max(1, int(round(cfg.mask_dilation_mm / spacing)))
        dil = ndimage.binary_dilation(mask, iterations=it)
        fixed_mask = sitk.GetImageFromArray(dil.astype(np.uint8))
        fixed_mask.SetSpacing((spacing, spacing))
        reg.SetMetricFixedMask(fixed_mask)
        cy, cx = ndimage.center_of_mass(mask)
        centre = np.array([cx, cy]) * spacing
    tx = sitk.AffineTransform(2)
    tx.SetCenter(tuple(float(c) for c in centre))
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=cfg.histogram_bins)
    reg.SetMetricSamplingStrategy(reg.NONE)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-3, numberOfIterations=cfg.iterations,
                                                 relaxationFactor=0.6, gradientMagnitudeTolerance=1e-8)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1.0, 0.0])
    reg.SetInitialTransform(tx, inPlace=True)
    try:
        reg.Execute(f_img, m_img)
    except RuntimeError as exc:  # e.g. too few samples inside the mask
        log.warning("affine registration failed (%s); identity used", exc)
        return moving.astype(np.float32), SliceTransform.identity(accepted=False)
    mat = np.asarray(tx.GetMatrix(), dtype=float).reshape(2, 2)
    trans = np.asarray(tx.GetTranslation(), dtype=float)
    det = float(np.linalg.det(mat))
    if det <= 0 or abs(np.log(det)) > 0.3 or float(np.linalg.norm(trans)) > cfg.max_shift_mm:
        log.warning("implausible affine (det %.3f, shift %.1f mm); identity used", det, float(np.linalg.norm(trans)))
        return moving.astype(np.float32), SliceTransform.identity(accepted=False)
    result = SliceTransform(mat, trans, np.asarray(tx.GetCenter(), dtype=float))
    final: sitk.Transform = tx
    if cfg.deformable:
        final = _bspline_refine(f_img, m_img, tx, fixed_mask, cfg)
        result = dataclasses.replace(result, deformable=final is not tx)
    out = sitk.Resample(m_img, f_img, final, sitk.sitkLinear, 0.0)
    return sitk.GetArrayFromImage(out).astype(np.float32), result


def _bspline_refine(f_img: sitk.Image, m_img: sitk.Image, affine: sitk.AffineTransform,
                    fixed_mask: sitk.Image | None, cfg: RegistrationConfig) -> sitk.Transform:
    """Coarse B-spline on top of the affine (same metric and mask); the affine alone on failure.

    The mask is handed over explicitly: SimpleITK's ImageRegistrationMethod has no getter for it."""
    import SimpleITK as sitk

    bs = sitk.BSplineTransformInitializer(f_img, [cfg.bspline_mesh, cfg.bspline_mesh])
    reg = sitk.ImageRegistrationMethod()
    reg.SetNumberOfThreads(cfg.threads)
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=cfg.histogram_bins)
    reg.SetMetricSamplingStrategy(reg.NONE)
    if fixed_mask is not None:
        reg.SetMetricFixedMask(fixed_mask)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=30)
    reg.SetMovingInitialTransform(affine)
    reg.SetInitialTransform(bs, inPlace=True)
    try:
        reg.Execute(f_img, m_img)
    except RuntimeError as exc:
        log.warning("B-spline refinement failed (%s); affine only", exc)
        return affine
    return sitk.CompositeTransform([affine, bs])


def register_stack(fixed: npt.NDArray[np.floating], moving: npt.NDArray[np.floating], prior: npt.NDArray[np.bool_],
                   spacing: float, cfg: RegistrationConfig = RegistrationConfig()
                   ) -> tuple[npt.NDArray[np.float32], list[SliceTransform]]:
    """Register every slice of ``moving`` (n, G, G) onto ``fixed``; a slice whose prior is empty uses
    the union of the prior over all slices as its mask."""
    union = np.any(prior, axis=0)
    out = np.empty_like(moving, dtype=np.float32)
    transforms = []
    for i in range(fixed.shape[0]):
        mask = prior[i] if prior[i].any() else (union if union.any() else None)
        out[i], t = register_slice(fixed[i], moving[i], mask, spacing, cfg)
        transforms.append(t)
    return out, transforms

"""CT -> coronary calcium: 8-class COCA calcium SEG + Agatston SR (TID 1500) + summary image.

Steps: choose the axial CT series (:mod:`.select`), load it as int16 HU, check it against the
model's ``input_domain`` (:mod:`pipelines.qc`), run the 2.5D U-Net on a reduced grid in slabs
(:mod:`.inference`), check how unusual its output is against ``output_domain``, keep voxels
>= 130 HU inside each predicted class, score per class and in total (:mod:`.agatston`), build
outputs with the shared builders (:mod:`pipelines.outputs`).  A study outside either range gets an
SR and summary image saying "not assessable" with the reason, no score and no SEG; the job still
succeeds.  ONNX Runtime only (no torch).
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from pipelines.base import PipelineContext, PipelineInputError, PipelineResult, SeriesView, StudyView
from pipelines.imaging import Volume, load_volume
from pipelines.outputs import AlgorithmIdentity
from pipelines.qc import check
from pipelines.qc.inputs import ct_properties
from pipelines.qc.scores import ConfidenceTally
from pipelines.quality import QualityIssue
from pipelines.runtime import ModelHandle

from .agatston import AgatstonResult, agatston
from .inference import segment_calcium
from .labels import CLASSES
from .options import CalciumOptions
from .outputs import build_not_assessable, build_outputs, segment_specs
from .preprocess import PreprocessConfig
from .select import select_ct_series

__all__ = ["CalciumPipeline", "VERSION", "segment_specs"]

VERSION = "0.1.0"


class CalciumPipeline:
    """Coronary (and aortic/valvular) calcium on chest CT, gated or not."""

    name = "calcium"
    version = VERSION
    modalities = ("CT",)

    def run(self, study: StudyView, context: PipelineContext) -> PipelineResult:
        opts = CalciumOptions.parse(context.options)
        handle: ModelHandle = context.acquire(opts.model)  # at the start: the version stays fixed for this job
        log = context.logger
        t0 = time.perf_counter()
        series = select_ct_series(study, opts.series)
        vol = load_volume(series, dtype=np.int16)
        if vol.shape[0] < 2:
            raise PipelineInputError(f"series {series.series_instance_uid}: a single slice cannot be scored")
        provenance = handle.manifest.provenance
        alg = AlgorithmIdentity.from_models(self.name, self.version, [handle.info],
                                            trained_on_phantoms=bool(provenance.synthetic),
                                            parameters=[("threshold_hu", f"{opts.threshold_hu:g}"),
                                                        ("model trained on", provenance.trained_on)])
        model_name = f"{handle.manifest.name} {handle.manifest.version}"
        inputs = check(ct_properties(vol, series.modality), handle.manifest.input_domain, model=model_name,
                       kind="input")
        if not inputs.ok:
            log.info("calcium: %s not assessable: %s", series.series_instance_uid,
                     "; ".join(i.message for i in inputs.issues))
            return self._not_assessable(vol, alg, opts, series, handle, inputs.issues, inputs.notes, t0)
        cfg = PreprocessConfig.from_dict(handle.manifest.preprocessing)
        in_name, out_name = handle.manifest.inputs[0].name, handle.manifest.outputs[0].name
        zpos = np.asarray(vol.origin, float) @ vol.direction[:, 2] + np.arange(vol.shape[0]) * vol.spacing[0]
        spacing_yx = (vol.spacing[1], vol.spacing[2])
        t_load = time.perf_counter()

        def predict(tiles: np.ndarray) -> np.ndarray:
            return handle.run_batched({in_name: tiles})[out_name]

        tally = ConfidenceTally()
        labels = segment_calcium(vol.array, zpos, spacing_yx, predict, cfg, threshold=opts.threshold_hu,
                                 dilation_px=opts.mask_dilation_px, slab=opts.slab_slices, tally=tally)
        t_model = time.perf_counter()
        outputs = check({"low_confidence_fraction": round(tally.fraction, 4)}, handle.manifest.output_domain,
                        model=model_name, kind="output")
        if not outputs.ok:
            log.info("calcium: %s not assessable: %s", series.series_instance_uid,
                     "; ".join(i.message for i in outputs.issues))
            return self._not_assessable(vol, alg, opts, series, handle, outputs.issues,
                                        inputs.notes + outputs.notes, t0)
        score = agatston(vol.array, labels, spacing_yx, vol.spacing[0], classes=[c.value for c in CLASSES],
                         threshold=opts.threshold_hu, min_area_mm2=opts.min_lesion_area_mm2,
                         connectivity=opts.connectivity, z_rule=opts.z_rule)
        # only voxels that were scored (lesions >= min area) go into the SEG
        labels = self._scored_only(vol.array, labels, score, opts)
        out = build_outputs(vol, labels, score, alg, opts, series, checks=inputs.notes + outputs.notes)
        coronary, total, category = out.coronary, out.total, out.category
        t_out = time.perf_counter()
        log.info("calcium: %s, coronary Agatston %.1f (%s), total %.1f; load %.1fs model %.1fs outputs %.1fs",
                 series.series_instance_uid, coronary, category, total, t_load - t0, t_model - t_load, t_out - t_model)
        return PipelineResult(
            datasets=out.datasets, pipeline_name=self.name, pipeline_version=self.version, models=[handle.info],
            summary={
                "series_instance_uid": series.series_instance_uid,
                "agatston_coronary": round(coronary, 2),
                "agatston_total": round(total, 2),
                "volume_total_mm3": round(score.total_volume_mm3, 2),
                "risk_category": category,
                "not_assessable": [],
                "low_confidence_fraction": round(tally.fraction, 4),
                "per_class": {c.key: {"agatston": round(score.per_class[c.value].score, 2),
                                      "volume_mm3": round(score.per_class[c.value].volume_mm3, 2),
                                      "lesions": score.per_class[c.value].n_lesions} for c in CLASSES},
                "seconds": {"load": round(t_load - t0, 2), "model": round(t_model - t_load, 2),
                            "outputs": round(t_out - t_model, 2)},
            },
        )

    def _not_assessable(self, vol: Volume, alg: AlgorithmIdentity, opts: CalciumOptions, series: SeriesView,
                        handle: ModelHandle, issues: Sequence[QualityIssue], notes: Sequence[str],
                        t0: float) -> PipelineResult:
        """SR and summary image saying why, no score, no SEG (a whole result that cannot be assessed)."""
        datasets = build_not_assessable(vol, alg, opts, series, issues, notes)
        return PipelineResult(
            datasets=datasets, pipeline_name=self.name, pipeline_version=self.version, models=[handle.info],
            summary={"series_instance_uid": series.series_instance_uid, "agatston_coronary": None,
                     "agatston_total": None, "risk_category": None,
                     "not_assessable": [i.as_dict() for i in issues],
                     "seconds": {"total": round(time.perf_counter() - t0, 2)}})

    @staticmethod
    def _scored_only(hu: np.ndarray, labels: np.ndarray, score: AgatstonResult, opts: CalciumOptions) -> np.ndarray:
        """Drop calcified pixels of lesions below the area threshold from the label map."""
        from scipy import ndimage

        from .agatston import _structure

        structure = _structure(opts.connectivity)
        for z in np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1)):
            lab = labels[z]
            for c in np.unique(lab[lab > 0]).tolist():
                comp, n = ndimage.label(lab == c, structure=structure)
                counts = np.bincount(comp.ravel(), minlength=n + 1)
                small = np.flatnonzero(counts * score.pixel_area_mm2 < opts.min_lesion_area_mm2)
                small = small[small > 0]
                if small.size:
                    lab[np.isin(comp, small)] = 0
        return labels

"""The ``myops`` pipeline: cardiac MR (bSSFP + LGE + T2w) -> SEG on LGE + SR (TID 1500) + summary image.

1. Pick the three series by naming and sequence attributes (:mod:`.series`); a missing one is a
   recorded input error, unless the model's ``input_domain`` bounds the sequences: then the result
   is "not assessable".  The series are checked against ``input_domain`` (:mod:`pipelines.qc`), and
   after inference the model's low-confidence foreground and the myocardial volume against
   ``output_domain``; outside either the SR and summary image say "not assessable" with the reason,
   without figures or SEG.
2. Shared preprocessing (:mod:`.preprocess`): slice correspondence, 1 mm grid in the LGE planes,
   normalisation; first-pass prediction on the unregistered grid gives the myocardial prior
   (:mod:`.inference`); slice-wise affine registration onto LGE guided by it; 128 x 128 ROI.
3. ONNX model on the ROI; probabilities mapped back onto the LGE pixel grid.
4. Outputs (shared builders in :mod:`pipelines.outputs`): BINARY SEG with myocardium, scar and edema
   (overlapping, SNOMED CT coded) referencing the LGE images; SR with myocardial, scar and edema
   volumes (mL) and scar / edema burden (% of myocardium); a Secondary Capture with the numbers.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from pipelines.base import ModelInfo, PipelineContext, PipelineInputError, PipelineResult, SeriesView, StudyView
from pipelines.imaging import Volume, load_volume
from pipelines.outputs import (
    AlgorithmIdentity,
    BuiltSegmentation,
    MeasurementGroupSpec,
    MeasurementSpec,
    RegionSpec,
    SegmentSpec,
    build_measurement_report,
    build_segmentation_for_volume,
    build_summary_image,
    codes,
    key_slice,
    outline_box,
)

from pipelines.qc import check
from pipelines.qc.inputs import mr_properties
from pipelines.qc.scores import ConfidenceTally, softmax
from pipelines.quality import QualityIssue
from pipelines.runtime import ModelHandle, ModelManifest

from . import labels as cls
from .inference import first_pass_prior, model_input, probabilities_to_anchor
from .options import MyopsOptions
from .preprocess import CHANNELS, GridStack, ModelInput, PreprocessConfig, PreprocessError
from .registration import RegistrationConfig
from .series import identify_series

__all__ = ["MyopsPipeline", "SEGMENTS", "measure"]

#: SEG segments in order: (mask key, spec)
SEGMENTS: tuple[tuple[str, SegmentSpec], ...] = (
    ("myocardium", SegmentSpec("Myocardium", codes.ANATOMICAL_STRUCTURE, codes.MYOCARDIUM, rgb=(220, 60, 60),
                               tracking_id="myocardium")),
    ("scar", SegmentSpec("Scar", codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE, codes.SCAR_TISSUE,
                         anatomic_region=codes.MYOCARDIUM, rgb=(255, 230, 40), tracking_id="scar")),
    ("edema", SegmentSpec("Edema", codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE, codes.EDEMA,
                          anatomic_region=codes.MYOCARDIUM, rgb=(60, 140, 255), tracking_id="edema")),
)


class _Logits:
    """Predictor callable over the model handle (batched, logits out)."""

    def __init__(self, handle: ModelHandle, input_name: str, output_name: str) -> None:
        self.handle, self.input_name, self.output_name = handle, input_name, output_name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.handle.run_batched({self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[self.output_name]


def measure(classes: np.ndarray, lge: Volume) -> dict[str, float]:
    """Volumes (mL) and burdens (% of myocardium) of a class map on the LGE grid (slice spacing from
    slice positions, i.e. the slab between slices counts)."""
    m = cls.tissue_masks(classes)
    voxel_ml = lge.voxel_volume_mm3 / 1000.0
    myo = float(m["myocardium"].sum()) * voxel_ml
    scar = float(m["scar"].sum()) * voxel_ml
    edema = float(m["edema"].sum()) * voxel_ml
    return {"myocardium_ml": myo, "scar_ml": scar, "edema_ml": edema,
            "scar_burden_pct": 100.0 * scar / myo if myo > 0 else 0.0,
            "edema_burden_pct": 100.0 * edema / myo if myo > 0 else 0.0}


class MyopsPipeline:
    """Myocardial pathology (scar, edema) from bSSFP + LGE + T2w short-axis stacks."""

    name = "myops"
    version = "0.1.0"
    modalities = ("MR",)

    def run(self, study: StudyView, context: PipelineContext) -> PipelineResult:
        t0 = time.perf_counter()
        opts = MyopsOptions.parse(context.options)  # OptionsError is a PipelineInputError
        handle: ModelHandle = context.acquire(opts.model)
        manifest = handle.manifest
        models: list[ModelInfo] = [handle.info]
        cfg = self._config(manifest, opts)
        phantom = bool(manifest.provenance.synthetic)
        alg = AlgorithmIdentity.from_models(self.name, self.version, models, trained_on_phantoms=phantom,
                                            parameters=[("registration", "affine+bspline" if opts.deformable else
                                                         ("affine" if opts.registration else "off"))])
        model_name = f"{manifest.name} {manifest.version}"
        series = self._series(study, opts, lenient="sequences" in manifest.input_domain)
        vols = {seq: load_volume(series[seq]) for seq in CHANNELS if seq in series}
        inputs = check(mr_properties(vols, [seq for seq in CHANNELS if seq in series]), manifest.input_domain,
                       model=model_name, kind="input")
        if not inputs.ok:
            return self._not_assessable(vols, alg, opts, inputs.issues, inputs.notes, models, t0)
        lge = vols["lge"]
        context.logger.info("myops: LGE %s, T2w %s, bSSFP %s",
                            *(series[s].series_description for s in ("lge", "t2", "bssfp")))
        tally = ConfidenceTally()
        classes, stack, mi = self.segment(vols, handle, cfg, tally)
        figures = measure(classes, lge)
        outputs = check({"low_confidence_fraction": round(tally.fraction, 4),
                         "myocardium_ml": round(figures["myocardium_ml"], 1)}, manifest.output_domain,
                        model=model_name, kind="output")
        if not outputs.ok:
            return self._not_assessable(vols, alg, opts, outputs.issues, inputs.notes + outputs.notes, models, t0)
        rejected = sum(not t.accepted for ts in mi.transforms.values() for t in ts)
        masks = cls.tissue_masks(classes)
        stacked = np.stack([masks[key] for key, _ in SEGMENTS], axis=-1)
        base = opts.series_number_base
        seg = build_segmentation_for_volume(lge, stacked, [spec for _, spec in SEGMENTS], algorithm=alg,
                                            series_number=base, series_description="Myocardial pathology SEG")
        notes = [
            f"LGE series {series['lge'].series_number} '{series['lge'].series_description}', T2w series "
            f"{series['t2'].series_number} '{series['t2'].series_description}', bSSFP series "
            f"{series['bssfp'].series_number} '{series['bssfp'].series_description}'",
            f"{stack.n} of {lge.shape[0]} LGE slices matched across the three sequences; unmatched slices not analysed",
            "edema = edema region including scar (MyoPS convention); burdens are % of myocardial volume",
            "each tissue is outlined on its key LGE slice (largest area); its figures cover all analysed slices",
        ]
        if rejected:
            notes.append(f"{rejected} slice registrations implausible and replaced by identity")
        notes += [f"check: {c}" for c in inputs.notes + outputs.notes]
        sr = build_measurement_report(
            lge.source_datasets, procedure=codes.MR_OF_HEART, groups=self._groups(figures, seg, masks, lge),
            algorithm=alg,
            series_number=base + 1, series_description="Myocardial pathology SR",
            referenced_seg=seg.dataset, extra_text=notes,
        )
        datasets = [d for d in (seg.dataset, sr) if d is not None]
        if opts.summary_image:
            lines = [
                f"Myocardium: {figures['myocardium_ml']:.1f} mL",
                f"Scar: {figures['scar_ml']:.1f} mL ({figures['scar_burden_pct']:.1f} % of myocardium)",
                f"Edema (incl. scar): {figures['edema_ml']:.1f} mL ({figures['edema_burden_pct']:.1f} % of myocardium)",
                *notes,
                f"Model {handle.manifest.name} {handle.manifest.version}: {handle.manifest.provenance.summary()}"[:300],
            ]
            datasets.append(build_summary_image(lge.headers[0], "Myocardial pathology (MyoPS)", lines, alg,
                                                series_number=base + 2))
        summary: dict[str, Any] = {k: round(v, 3) for k, v in figures.items()}
        summary.update({"not_assessable": [], "low_confidence_fraction": round(tally.fraction, 4),
                        "matched_slices": stack.n, "lge_slices": lge.shape[0], "rejected_registrations": rejected,
                        "seconds": round(time.perf_counter() - t0, 2), "segments": sorted(seg.segment_numbers)})
        return PipelineResult(datasets=datasets, pipeline_name=self.name, pipeline_version=self.version,
                              models=models, summary=summary)

    @staticmethod
    def _series(study: StudyView, opts: MyopsOptions, lenient: bool) -> dict[str, SeriesView]:
        """The three series; with ``lenient`` (the model's input_domain bounds the sequences) a missing
        one is left for the sequence check to report as not assessable, as long as some MR series of
        a sequence is there (else the usual input error, naming what the study holds)."""
        return identify_series(study, opts.patterns, allow_missing=lenient)

    def _not_assessable(self, vols: dict[str, Volume], alg: AlgorithmIdentity, opts: MyopsOptions,
                        issues: Sequence[QualityIssue], notes: Sequence[str], models: list[ModelInfo],
                        t0: float) -> PipelineResult:
        """SR and summary image saying why, no figures, no SEG (the whole result cannot be assessed)."""
        ref = vols.get("lge") or next(iter(vols.values()))
        base = opts.series_number_base
        datasets = [build_measurement_report(ref.source_datasets, procedure=codes.MR_OF_HEART, groups=[],
                                             algorithm=alg, series_number=base + 1,
                                             series_description="Myocardial pathology SR",
                                             extra_text=[f"check: {n}" for n in notes], issues=issues)]
        if opts.summary_image:
            datasets.append(build_summary_image(ref.headers[0], "Myocardial pathology (MyoPS)",
                                                ["No volume or burden is reported for this study.",
                                                 "Checks against the model's accepted ranges:", *notes], alg,
                                                series_number=base + 2, issues=issues))
        return PipelineResult(datasets=datasets, pipeline_name=self.name, pipeline_version=self.version,
                              models=models, summary={"not_assessable": [i.as_dict() for i in issues],
                                                      "scar_burden_pct": None, "edema_burden_pct": None,
                                                      "myocardium_ml": None,
                                                      "seconds": round(time.perf_counter() - t0, 2)})

    @staticmethod
    def segment(vols: dict[str, Volume], handle: ModelHandle, cfg: PreprocessConfig,
                tally: ConfidenceTally | None = None) -> tuple[np.ndarray, GridStack, ModelInput]:
        """Class map on the LGE grid (z, y, x) plus the grid stack and model input used; ``tally``
        (:mod:`pipelines.qc.scores`) counts the low-confidence foreground of the final prediction."""
        manifest = handle.manifest
        predict = _Logits(handle, manifest.inputs[0].name, manifest.outputs[0].name)
        try:
            stack, mi = model_input(vols, cfg, lambda st: first_pass_prior(st, predict, cfg))
        except PreprocessError as exc:
            raise PipelineInputError(f"myops: {exc}") from exc
        logits = predict(mi.tensor)
        probs = softmax(logits, axis=1)
        if tally is not None:
            tally.add(probs, axis=1)
        classes = probabilities_to_anchor(probs.astype(np.float32), stack, mi.roi_yx, vols[cfg.anchor])
        return classes, stack, mi

    @staticmethod
    def _config(manifest: ModelManifest, opts: MyopsOptions) -> PreprocessConfig:
        """Preprocessing as the model was trained: the manifest's channel order (the network's input
        channels are the sequences in that order; a model trained as LGE, T2w, bSSFP must not be fed
        bSSFP, LGE, T2w) and anchor.  Unknown sequence names, a channel list that does not match the
        input shape or an anchor other than LGE (results are drawn on the LGE images) are refused."""
        spec = manifest.inputs[0]
        pre = manifest.preprocessing or {}
        channels = tuple(str(c) for c in pre.get("channels", CHANNELS))
        anchor = str(pre.get("anchor", "lge"))
        unknown = [c for c in channels if c not in CHANNELS]
        if unknown or len(set(channels)) != len(channels) or "lge" not in channels:
            raise PipelineInputError(f"myops: model {manifest.name} preprocessing.channels {list(channels)}: expected "
                                     f"distinct sequences among {list(CHANNELS)}, LGE included")
        if anchor != "lge":
            raise PipelineInputError(f"myops: model {manifest.name} preprocessing.anchor {anchor!r}: only 'lge' is "
                                     "supported (the SEG and the SR are drawn on the LGE images)")
        if len(spec.shape) != 4 or spec.shape[1] != len(channels) or not isinstance(spec.shape[2], int):
            raise PipelineInputError(f"myops: model {manifest.name} input {spec.name} has shape {list(spec.shape)}, "
                                     f"expected (N, {len(channels)}, R, R) (fixed R), channels {list(channels)}")
        roi = int(spec.shape[2])
        lo, hi = (float(v) for v in pre.get("percentiles", (0.5, 99.5)))
        return PreprocessConfig(
            grid_size=int(pre.get("grid_size", 224)), grid_spacing_mm=float(pre.get("grid_spacing_mm", 1.0)),
            roi_size=roi, anchor=anchor, channels=channels,
            registration=RegistrationConfig(enabled=opts.registration, deformable=opts.deformable),
            percentiles=(lo, hi),
            bias_order=int(pre.get("bias_order", 0)),
        )

    @staticmethod
    def _groups(f: dict[str, float], seg: BuiltSegmentation, masks: dict[str, np.ndarray],
                lge: Volume) -> list[MeasurementGroupSpec]:
        """One group per tissue, drawn on its key LGE slice (TID 1410); a tissue with no voxel has
        no location and is reported with zeros under Derived Imaging Measurements."""
        vol = codes.VOLUME

        def region(key: str) -> RegionSpec | None:
            k = key_slice(masks[key])
            if k is None:
                return None
            return outline_box(masks[key][k], lge.headers[k], frame_number=lge.frame_numbers[k] if lge.is_multiframe
                               else None)

        return [
            MeasurementGroupSpec(
                tracking_id="myocardium", finding=codes.MYOCARDIUM, finding_site=codes.LEFT_VENTRICLE,
                measurements=[MeasurementSpec(vol, round(f["myocardium_ml"], 2), codes.ML)],
                referenced_segment=seg.ref("Myocardium"), region=region("myocardium")),
            MeasurementGroupSpec(
                tracking_id="scar", finding=codes.SCAR_TISSUE, finding_site=codes.MYOCARDIUM,
                finding_category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
                measurements=[MeasurementSpec(vol, round(f["scar_ml"], 2), codes.ML),
                              MeasurementSpec(codes.MYOCARDIAL_SCAR_FRACTION, round(f["scar_burden_pct"], 2),
                                              codes.PERCENT)],
                referenced_segment=seg.ref("Scar"), region=region("scar")),
            MeasurementGroupSpec(
                tracking_id="edema", finding=codes.EDEMA, finding_site=codes.MYOCARDIUM,
                finding_category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
                measurements=[MeasurementSpec(vol, round(f["edema_ml"], 2), codes.ML),
                              MeasurementSpec(codes.MYOCARDIAL_EDEMA_FRACTION, round(f["edema_burden_pct"], 2),
                                              codes.PERCENT)],
                referenced_segment=seg.ref("Edema"), region=region("edema")),
        ]

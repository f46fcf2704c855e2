"""The ``syntax`` pipeline: coronary angiography (XA cines) -> SYNTAX score SR (TID 1500) + summary image.

1. Every XA instance with at least ``min_frames`` frames is decoded (:func:`pipelines.imaging.load_cine`);
   single frames and undecodable instances are listed as not used.
2. Artery classifier (``syntax-artery``): sigmoid <= left_max -> left, >= right_min -> right, else
   "other" (excluded, counted in the report).  Quality control (:mod:`pipelines.qc`): a cine outside
   the router's accepted input ranges is not routed; a routed cine outside its side's fold models'
   ranges is not scored (both are named in the report).
3. Per side, the views ordered by (SeriesInstanceUID, file name) go through the shared preprocessing
   (:mod:`pipelines.syntax.preprocess`, parameters from each model's manifest) into the 5 fold models
   (backbone + head fused in one ONNX graph each).
4. :mod:`pipelines.syntax.ensemble`: per-fold scores, calibration a*(L+R)+b, total = left + right.
5. SR with total / left / right SYNTAX, the > threshold finding, cines used per artery and excluded,
   model names / versions / provenance, referencing the analysed instances; a Secondary Capture
   with the same numbers for viewers that do not render SR.
ONNX Runtime only (no torch).  CPU time per study is logged and returned in the summary.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Mapping

import numpy as np
from pydicom.dataset import Dataset

from pipelines.base import InstanceRef, ModelInfo, PipelineContext, PipelineInputError, PipelineResult, StudyView
from pipelines.imaging import load_cine
from pipelines.outputs import (AlgorithmIdentity, MeasurementGroupSpec, MeasurementSpec, QualitativeSpec,
                               build_measurement_report, build_summary_image, codes)
from pipelines.qc import check
from pipelines.qc.inputs import xa_properties
from pipelines.qc.scores import ensemble_spread
from pipelines.quality import QualityIssue
from pipelines.runtime import ModelHandle
from pipelines.runtime.manifest import DomainRange

from .ensemble import SyntaxScores, combine, score_from_output
from .options import SyntaxOptions
from .preprocess import CineConfig, PreprocessError, preprocess_cine

__all__ = ["SyntaxPipeline", "VERSION", "SIDES", "Cine", "CINES_USED", "CINES_EXCLUDED", "SideScores", "side_scores"]

VERSION = "0.1.0"
SIDES = ("left", "right")
#: private concepts for the cine counts (same private coding scheme as the SYNTAX codes)
CINES_USED = codes.private_code("CINES-USED", "Number of angiographic cines analysed")
CINES_EXCLUDED = codes.private_code("CINES-OTHER", "Number of cines excluded as neither left nor right coronary")
SITES = {"left": codes.LEFT_MAIN_CORONARY_ARTERY, "right": codes.RIGHT_CORONARY_ARTERY}
SIDE_CODES = {"left": codes.SYNTAX_SCORE_LEFT, "right": codes.SYNTAX_SCORE_RIGHT}


@dataclasses.dataclass
class Cine:
    """One decoded cine and where the artery classifier put it."""

    ref: InstanceRef
    frames: np.ndarray
    header: Dataset
    p_right: float = float("nan")
    artery: str = ""  # left | right | other


@dataclasses.dataclass(frozen=True)
class SideScores:
    """What the report can say: a score is None where it cannot be assessed.

    A coronary system without an analysed cine is not assessed; then the total is not assessed
    either, and "total > threshold" is decided only when the assessed system alone exceeds it
    (scores are >= 0, so the total would too); otherwise ``high`` is None (undecided)."""

    total: float | None
    left: float | None
    right: float | None
    high: bool | None
    issues: tuple[QualityIssue, ...]

    def side(self, side: str) -> float | None:
        """The score of the ``left`` or ``right`` coronary system (None: not assessed)."""
        if side == "left":
            return self.left
        if side == "right":
            return self.right
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")


def side_scores(scores: SyntaxScores, cines: dict[str, int], other: int, threshold: float,
                unusual: Mapping[str, QualityIssue] | None = None) -> SideScores:
    """Scores and quality issues from the ensemble, the number of analysed cines per side, and the
    sides whose output is unusual (:mod:`pipelines.qc`, e.g. the fold models disagree): a side
    without a cine or with an unusual output is not assessed, nor then is the total."""
    unusual = dict(unusual or {})
    missing = [s for s in SIDES if not cines[s]]
    if len(missing) == 2:
        raise ValueError("no side has a cine: nothing to report")
    issues: list[QualityIssue] = [
        QualityIssue("NO-CINE", f"no cine of the {gone} coronary system could be analysed"
                     + (f" ({other} cine(s) excluded as neither left nor right)" if other else ""),
                     scope=f"SYNTAX {gone} coronary") for gone in missing]
    issues += [dataclasses.replace(unusual[s], scope=f"SYNTAX {s} coronary") for s in SIDES
               if s in unusual and s not in missing]
    out = [s for s in SIDES if s in missing or s in unusual]
    if not out:
        return SideScores(scores.total, scores.left, scores.right, scores.total > threshold, ())
    if len(out) == 2:
        issues.append(QualityIssue("SIDE-MISSING", "neither coronary system could be assessed, so the total "
                                   "SYNTAX score is not known", scope="SYNTAX total"))
        return SideScores(None, None, None, None, tuple(issues))
    gone = out[0]
    kept = next(s for s in SIDES if s != gone)
    # a missing side was scored from no cine (0 before calibration): the calibrated total is then the
    # kept side's score; an unusual side had cines, so the kept side keeps its calibrated share
    kept_score = scores.total if gone in missing else scores.side(kept)
    issues.append(QualityIssue("SIDE-MISSING", f"the {gone} coronary system is not assessed, so the total SYNTAX "
                               f"score is not known (the {kept} system alone scores {kept_score:.1f})",
                               scope="SYNTAX total"))
    high = True if kept_score > threshold else None
    return SideScores(None, kept_score if kept == "left" else None, kept_score if kept == "right" else None,
                      high, tuple(issues))


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-float(x))))


class SyntaxPipeline:
    """SYNTAX score (total, left, right) from an unlabelled coronary angiography study."""

    name = "syntax"
    version = VERSION
    modalities = ("XA",)

    def run(self, study: StudyView, context: PipelineContext) -> PipelineResult:
        opts = SyntaxOptions.parse(context.options)
        log = context.logger
        # acquire at the start: the versions stay fixed for this job
        artery: ModelHandle = context.acquire(opts.artery_model)
        folds: dict[str, dict[int, ModelHandle]] = {
            side: {k: context.acquire(f"{opts.model_prefix}-{side}-fold{k}") for k in opts.folds}
            for side in SIDES}
        mixed = self._mixed_versions(folds)
        if mixed and not opts.allow_mixed_versions:
            raise PipelineInputError(
                f"mixed-version SYNTAX ensemble ({mixed}): install all fold models of one version, or set "
                "pipelines.syntax.allow_mixed_versions: true to average them anyway (the SR then lists each fold)")
        cpu0, t0 = time.process_time(), time.perf_counter()
        cines, skipped = self._decode(study, opts)
        handles = [artery] + [folds[s][k] for s in SIDES for k in opts.folds]
        # the router's accepted input ranges before routing; each side's fold models' ranges after it
        # (a cine is only ever scored by its side's models)
        cines, outside, domain_issues, checked = self._check_cines(cines, [artery])
        skipped += [f"{c.ref.sop_instance_uid}: {why}" for c, why in outside]
        t_load = time.perf_counter()
        if not cines:
            return self._not_assessable(study, handles, [c for c, _ in outside], domain_issues, skipped, opts, t0)
        left_max, right_min = self._thresholds(artery, opts)
        self._classify(cines, artery, left_max, right_min)
        probabilities = {c.ref.sop_instance_uid: round(c.p_right, 4) for c in cines}
        by_side = {s: sorted((c for c in cines if c.artery == s),
                             key=lambda c: (c.ref.series_instance_uid, c.ref.path.name))
                   for s in SIDES}
        other = [c for c in cines if c.artery == "other"]
        if not by_side["left"] and not by_side["right"]:
            # e.g. a ventriculogram or aortogram only: nothing to score, which the reader must be told
            probs = ", ".join(f"{c.p_right:.2f}" for c in cines[:8]) + (", ..." if len(cines) > 8 else "")
            issue = QualityIssue("NO-CORONARY", f"none of the {len(cines)} analysable cine(s) was recognised as a "
                                 f"left or right coronary injection (all routed as neither, e.g. a ventriculogram "
                                 f"or aortogram; p(right) {probs}; left <= {left_max:g}, right >= {right_min:g})")
            return self._not_assessable(study, handles, cines, [issue], skipped, opts, t0,
                                        f"{len(cines)} cine(s) routed as neither left nor right coronary",
                                        probabilities=probabilities)
        for side in SIDES:
            kept, out_side, side_issues, side_checked = self._check_cines(by_side[side], list(folds[side].values()))
            by_side[side] = kept
            outside += out_side
            skipped += [f"{c.ref.sop_instance_uid}: routed {side}; {why}" for c, why in out_side]
            domain_issues += [i for i in side_issues if i.code not in {d.code for d in domain_issues}]
            checked += [n for n in side_checked if n not in checked]
        if not by_side["left"] and not by_side["right"]:
            return self._not_assessable(study, handles, [c for c, _ in outside], domain_issues, skipped, opts, t0,
                                        probabilities=probabilities)
        dropped = {s: by_side[s][opts.max_views:] for s in SIDES}
        by_side = {s: by_side[s][:opts.max_views] for s in SIDES}
        per_fold: dict[int, tuple[float, float]] = {}
        calibration: dict[int, dict[str, float]] = {}
        for k in opts.folds:
            vals = []
            for side in SIDES:
                vals.append(self._side_score(folds[side][k], by_side[side]))
            per_fold[k] = (vals[0], vals[1])
            cal = dict(folds["left"][k].manifest.calibration or {})
            if opts.calibrate:
                if not {"a", "b"} <= set(cal):
                    raise PipelineInputError(f"model {folds['left'][k].name} has no calibration a, b in its manifest; "
                                             f"set pipelines.syntax.calibrate: false or install a calibrated model")
                calibration[k] = {"a": float(cal["a"]), "b": float(cal["b"])}
        scores = combine(per_fold, calibration if opts.calibrate else None)
        t_model = time.perf_counter()
        unusual, spreads, out_notes = self._check_outputs(scores, by_side, folds, opts)
        infos = [h.info for h in handles]
        phantom = any(bool(h.manifest.provenance.synthetic) for h in handles)
        params = [("artery routing", f"p(right) <= {left_max:g} left, >= {right_min:g} right, else other"),
                  ("calibration", "per fold a*(L+R)+b, mean over folds, >= 0" if opts.calibrate else "none"),
                  ("models trained on", artery.manifest.provenance.trained_on)]
        if mixed:
            params.append(("mixed-version ensemble", mixed))
        alg = AlgorithmIdentity.from_models(self.name, self.version, self._model_infos(infos),
                                            trained_on_phantoms=phantom, parameters=params)
        shown = side_scores(scores, {s: len(by_side[s]) for s in SIDES}, len(other), opts.threshold, unusual)
        high = shown.high
        used = [c for s in SIDES for c in by_side[s]]
        sources = [c.header for c in used + other]
        notes = self._notes(by_side, other, dropped, skipped, scores, opts, shown)
        notes.insert(0, "models used: " + "; ".join(f"{m.name} {m.version}" for m in infos))
        notes += [f"check: {c}" for c in checked + out_notes]
        if outside:
            notes.append(f"{len(outside)} cine(s) outside the models' accepted input ranges not analysed: "
                         + "; ".join(why for _, why in outside[:5]))
        if mixed:
            notes.insert(1, f"mixed-version ensemble (allowed by pipelines.syntax.allow_mixed_versions): {mixed}")
        sr = build_measurement_report(sources, procedure=codes.CORONARY_ARTERIOGRAPHY,
                                      groups=self._groups(shown, by_side, other, opts), algorithm=alg,
                                      series_number=opts.series_number_sr, series_description="SYNTAX score",
                                      extra_text=notes, issues=shown.issues)
        datasets = [sr]
        if opts.summary_image:
            datasets.append(build_summary_image(sources[0], "SYNTAX score (coronary angiography)",
                                                self._lines(shown, scores, by_side, other, skipped, opts), alg,
                                                opts.series_number_summary, issues=shown.issues))
        t_out = time.perf_counter()
        cpu = time.process_time() - cpu0
        log.info("syntax: %s total %s (left %s, right %s)%s; cines left %d right %d other %d; "
                 "decode %.1fs model %.1fs outputs %.1fs; CPU time %.1fs",
                 study.study_instance_uid, _fmt(shown.total), _fmt(shown.left), _fmt(shown.right),
                 " HIGH" if high else "",
                 len(by_side["left"]), len(by_side["right"]), len(other), t_load - t0, t_model - t_load,
                 t_out - t_model, cpu)
        return PipelineResult(
            datasets=datasets, pipeline_name=self.name, pipeline_version=self.version, models=infos,
            summary={
                "syntax_total": _round(shown.total), "syntax_left": _round(shown.left),
                "syntax_right": _round(shown.right), "high": high, "threshold": opts.threshold,
                "not_assessable": [i.as_dict() for i in shown.issues],
                "fold_spread": {side: round(v, 3) for side, v in spreads.items()},
                "cines_outside_domain": len(outside),
                "calibrated": scores.calibrated,
                "raw": {"left": round(scores.raw_left, 2) if shown.left is not None else None,
                        "right": round(scores.raw_right, 2) if shown.right is not None else None,
                        "per_fold": [{"fold": k, "left": round(lv, 3), "right": round(rv, 3)}
                                     for k, lv, rv in scores.per_fold]},
                "cines": {"left": len(by_side["left"]), "right": len(by_side["right"]), "other": len(other),
                          "not_used": len(skipped)},
                "artery_probabilities": probabilities,
                "seconds": {"decode": round(t_load - t0, 2), "model": round(t_model - t_load, 2),
                            "outputs": round(t_out - t_model, 2), "cpu": round(cpu, 2)},
            },
        )

    # -- quality control (pipelines.qc) -------------------------------------------------------------
    @staticmethod
    def _check_cines(cines: list[Cine], handles: list[ModelHandle]
                     ) -> tuple[list[Cine], list[tuple[Cine, str]], list[QualityIssue], list[str]]:
        """Each cine against every distinct ``input_domain`` of ``handles`` (the router, or one side's folds).

        Returns the cines inside, (cine, reason) for those outside, one whole-result issue per code
        (for when no cine is left: the first cine's reason, and how many share it), and the notes."""
        domains: dict[str, tuple[str, Mapping[str, DomainRange]]] = {}
        for h in handles:
            if h.manifest.input_domain:
                key = repr(sorted((k, v.to_dict()) for k, v in h.manifest.input_domain.items()))
                domains.setdefault(key, (f"{h.manifest.name} {h.manifest.version}", h.manifest.input_domain))
        inside: list[Cine] = []
        outside: list[tuple[Cine, str]] = []
        by_code: dict[str, list[QualityIssue]] = {}
        notes: list[str] = []
        for c in cines:
            found: list[QualityIssue] = []
            props = xa_properties(c.header, c.frames, c.ref.modality or str(c.header.get("Modality", "")))
            for model, domain in domains.values():
                outcome = check(props, domain, model=model, kind="input", subject=f"cine {c.ref.sop_instance_uid}")
                found += outcome.issues
                if not notes:
                    notes = list(outcome.notes)
            if found:
                outside.append((c, "; ".join(i.message for i in found)))
                for i in found:
                    by_code.setdefault(i.code, []).append(i)
            else:
                inside.append(c)
        issues = [QualityIssue(code, found[0].message + (f" (as are {len(found) - 1} more cine(s))" if len(found) > 1
                                                         else "")) for code, found in by_code.items()]
        return inside, outside, issues, notes

    @staticmethod
    def _check_outputs(scores: SyntaxScores, by_side: dict[str, list[Cine]], folds: dict[str, dict[int, ModelHandle]],
                       opts: SyntaxOptions) -> tuple[dict[str, QualityIssue], dict[str, float], list[str]]:
        """Spread of the fold models' raw scores per side with cines, against the side's first fold
        model's ``output_domain`` (the range belongs to the ensemble; every fold manifest carries it)."""
        unusual: dict[str, QualityIssue] = {}
        spreads: dict[str, float] = {}
        notes: list[str] = []
        for i, side in enumerate(SIDES):
            if not by_side[side]:
                continue
            spreads[side] = ensemble_spread([row[1 + i] for row in scores.per_fold])
            first = folds[side][opts.folds[0]].manifest
            outcome = check({"fold_spread": round(spreads[side], 3)}, first.output_domain,
                            model=f"{opts.model_prefix}-{side} ensemble {first.version}", kind="output")
            notes += [f"{side}: {n}" for n in outcome.notes]
            if outcome.issues:
                unusual[side] = outcome.issues[0]
        return unusual, spreads, notes

    def _not_assessable(self, study: StudyView, handles: list[ModelHandle], cines: list[Cine],
                        issues: list[QualityIssue], skipped: list[str], opts: SyntaxOptions, t0: float,
                        why: str | None = None, probabilities: dict[str, float] | None = None) -> PipelineResult:
        """No cine to score (none within the models' accepted ranges, or none routed to a coronary
        system): SR and summary image say why, no score; ``why`` is the summary image's reason line;
        ``probabilities``: p(right) per routed cine (SOP Instance UID), when routing took place."""
        infos = [h.info for h in handles]
        phantom = any(bool(h.manifest.provenance.synthetic) for h in handles)
        alg = AlgorithmIdentity.from_models(self.name, self.version, self._model_infos(infos),
                                            trained_on_phantoms=phantom,
                                            parameters=[("models trained on",
                                                         handles[0].manifest.provenance.trained_on)])
        sources = [c.header for c in cines]
        notes = ["models used: " + "; ".join(f"{m.name} {m.version}" for m in infos)]
        if skipped:
            notes.append("not used: " + "; ".join(skipped[:10])
                         + (f" (+{len(skipped) - 10} more)" if len(skipped) > 10 else ""))
        datasets = [build_measurement_report(sources, procedure=codes.CORONARY_ARTERIOGRAPHY, groups=[], algorithm=alg,
                                             series_number=opts.series_number_sr, series_description="SYNTAX score",
                                             extra_text=notes, issues=issues)]
        if opts.summary_image:
            datasets.append(build_summary_image(sources[0], "SYNTAX score (coronary angiography)",
                                                ["No SYNTAX score is reported for this study.",
                                                 why or f"{len(cines)} cine(s) outside the models' accepted "
                                                        "input ranges"],
                                                alg, opts.series_number_summary, issues=issues))
        return PipelineResult(
            datasets=datasets, pipeline_name=self.name, pipeline_version=self.version, models=infos,
            summary={"syntax_total": None, "syntax_left": None, "syntax_right": None, "high": None,
                     "threshold": opts.threshold, "not_assessable": [i.as_dict() for i in issues],
                     "cines_outside_domain": 0 if why else len(cines),
                     "artery_probabilities": dict(probabilities or {}),
                     "seconds": {"total": round(time.perf_counter() - t0, 2)}})

    # -- steps -------------------------------------------------------------------------------------
    @staticmethod
    def _decode(study: StudyView, opts: SyntaxOptions) -> tuple[list[Cine], list[str]]:
        series = study.by_modality(*opts.modalities)
        if not series:
            have = (", ".join(sorted({f"{s.modality or '?'} '{s.series_description}'" for s in study.series}))
                    or "nothing")
            raise PipelineInputError(f"no {'/'.join(opts.modalities)} series in the study (it has: {have})")
        cines, skipped = [], []
        for s in series:
            for ref in s.instances:
                try:
                    frames = load_cine(ref)
                except PipelineInputError as exc:
                    skipped.append(f"{ref.sop_instance_uid}: {exc}")
                    continue
                if frames.shape[0] < opts.min_frames:
                    skipped.append(f"{ref.sop_instance_uid}: {frames.shape[0]} frame(s), not a cine "
                                   f"(min_frames {opts.min_frames})")
                    continue
                cines.append(Cine(ref, frames, ref.header()))
        if not cines:
            raise PipelineInputError(f"no usable XA cine among {sum(len(s) for s in series)} instance(s): "
                                     + "; ".join(skipped[:5]))
        return cines, skipped

    @staticmethod
    def _thresholds(artery: ModelHandle, opts: SyntaxOptions) -> tuple[float, float]:
        pre = artery.manifest.preprocessing
        lo = opts.left_max if opts.left_max is not None else float(pre.get("left_max", 0.10))
        hi = opts.right_min if opts.right_min is not None else float(pre.get("right_min", 0.90))
        if lo >= hi:
            raise PipelineInputError(f"artery routing: left_max {lo} must be below right_min {hi}")
        return lo, hi

    @staticmethod
    def _config(handle: ModelHandle) -> CineConfig:
        try:
            return CineConfig.from_manifest(handle.manifest.preprocessing, f"model {handle.name}")
        except PreprocessError as exc:
            raise PipelineInputError(str(exc)) from exc

    def _classify(self, cines: list[Cine], handle: ModelHandle, left_max: float, right_min: float) -> None:
        cfg = self._config(handle)
        x = np.stack([preprocess_cine(c.frames, cfg) for c in cines])
        name_in, name_out = handle.manifest.inputs[0].name, handle.manifest.outputs[0].name
        logits = handle.run_batched({name_in: x})[name_out].reshape(len(cines), -1)[:, 0]
        for c, z in zip(cines, logits):
            c.p_right = _sigmoid(z)
            c.artery = "left" if c.p_right <= left_max else "right" if c.p_right >= right_min else "other"

    def _side_score(self, handle: ModelHandle, views: list[Cine]) -> float:
        if not views:
            return 0.0
        cfg = self._config(handle)
        x = np.stack([preprocess_cine(c.frames, cfg) for c in views])[None]
        out = handle.run({handle.manifest.inputs[0].name: x})[handle.manifest.outputs[0].name]
        return score_from_output(float(np.asarray(out).reshape(-1)[1]))

    @staticmethod
    def _mixed_versions(folds: dict[str, dict[int, ModelHandle]]) -> str:
        """'' when every fold model has the same version,
        else e.g. 'fold 0 0.3.0-hosp; folds 1, 2, 3, 4 0.2.0-phantom'."""
        by_version: dict[str, list[str]] = {}
        for side in SIDES:
            for k, h in folds[side].items():
                by_version.setdefault(h.info.version, []).append(f"{side} {k}")
        if len(by_version) < 2:
            return ""
        return "; ".join(f"{', '.join(where)}: {v}" for v, where in by_version.items())

    @staticmethod
    def _model_infos(infos: list[ModelInfo]) -> list[ModelInfo]:
        """One entry per model group for the identity: fold models of one side with the same version and
        provenance become ``<side>-fold0,1,2,3,4``; a fold whose version or provenance differs keeps its own
        entry, so the SR always names each model and version actually used."""
        groups: dict[tuple[str, str, str, str], list[ModelInfo]] = {}
        for m in infos:
            base, sep, fold = m.name.rpartition("-fold")
            key = (base if sep else m.name, m.version, m.provenance, m.provider)
            groups.setdefault(key, []).append(m)
        out = []
        for (base, _, _, _), members in groups.items():
            if len(members) == 1:
                out.append(members[0])
                continue
            folds = ",".join(m.name.rpartition("-fold")[2] for m in members)
            out.append(dataclasses.replace(members[0], name=f"{base}-fold{folds}"))
        return out

    @staticmethod
    def _groups(shown: SideScores, by_side: dict[str, list[Cine]], other: list[Cine],
                opts: SyntaxOptions) -> list[MeasurementGroupSpec]:
        """Total, left and right; a score that cannot be assessed is left out (the QualityIssue of
        that group says why), and "total > threshold" only when it can be decided."""
        qualitative = ([QualitativeSpec(codes.HIGH_SYNTAX_SCORE, codes.YES if shown.high else codes.NO)]
                       if shown.high is not None else [])
        groups = [MeasurementGroupSpec(
            tracking_id="SYNTAX total",
            finding=codes.CORONARY_ARTERY_DISEASE_COMPLEXITY,
            finding_site=codes.HEART,
            measurements=[MeasurementSpec(codes.SYNTAX_SCORE, _round(shown.total, 3), codes.POINTS),
                          MeasurementSpec(CINES_USED, sum(len(v) for v in by_side.values()), codes.CINES),
                          MeasurementSpec(CINES_EXCLUDED, len(other), codes.CINES)],
            qualitative=qualitative,
        )]
        for side in SIDES:
            groups.append(MeasurementGroupSpec(
                tracking_id=f"SYNTAX {side} coronary",
                finding=codes.CORONARY_ARTERY_DISEASE_COMPLEXITY,
                finding_site=SITES[side],
                measurements=[MeasurementSpec(SIDE_CODES[side], _round(shown.side(side), 3), codes.POINTS),
                              MeasurementSpec(CINES_USED, len(by_side[side]), codes.CINES)],
            ))
        return groups

    @staticmethod
    def _lines(shown: SideScores, scores: SyntaxScores, by_side: dict[str, list[Cine]], other: list[Cine],
               skipped: list[str], opts: SyntaxOptions) -> list[str]:
        """The summary image's lines; "not assessed" instead of a number where there is none."""
        if shown.total is not None:
            total = (f"SYNTAX score (total): {shown.total:.1f}  -  {'>' if shown.high else '<='} {opts.threshold:g}"
                     f"{' (high)' if shown.high else ''}")
        elif shown.high:
            total = f"SYNTAX score (total): not assessed, but > {opts.threshold:g} (high) from one system alone"
        else:
            total = f"SYNTAX score (total): not assessed; > {opts.threshold:g} cannot be decided"
        sides = [f"{side.capitalize()} coronary: " + (f"{score:.1f}" if (score := shown.side(side)) is not None
                                                     else "not assessed") + f" ({len(by_side[side])} cines)"
                 for side in SIDES]
        return [total, *sides,
                f"Excluded as other: {len(other)} cines; not used: {len(skipped)} instances",
                "Calibrated (a*(L+R)+b per fold), shared by raw L:R" if scores.calibrated else "Uncalibrated",
                "Raw ensemble: " + ", ".join(f"{side} " + (f"{scores.raw(side):.1f}" if shown.side(side) is not None
                                                         else "not assessed") for side in SIDES)]

    @staticmethod
    def _notes(by_side: dict[str, list[Cine]], other: list[Cine], dropped: dict[str, list[Cine]], skipped: list[str],
               scores: SyntaxScores, opts: SyntaxOptions, shown: SideScores) -> list[str]:
        notes = [f"high SYNTAX finding: total > {opts.threshold:g}",
                 f"raw ensemble (mean of {len(scores.per_fold)} folds): "
                 + ", ".join(f"{side} " + (f"{scores.raw(side):.2f}" if shown.side(side) is not None
                                           else "not assessed")
                             for side in SIDES)
                 + ("; calibrated total shared between sides by the raw left:right ratio" if scores.calibrated else "")]
        for side in SIDES:
            if by_side[side]:
                notes.append(f"{side} coronary cines: "
                             + ", ".join(f"{c.ref.sop_instance_uid} (p_right {c.p_right:.2f})" for c in by_side[side]))
            if dropped[side]:
                notes.append(f"{side}: {len(dropped[side])} cine(s) beyond max_views {opts.max_views} not used")
        if other:
            notes.append("excluded as other: "
                         + ", ".join(f"{c.ref.sop_instance_uid} (p_right {c.p_right:.2f})" for c in other))
        if skipped:
            notes.append("not used: " + "; ".join(skipped[:10])
                         + (f" (+{len(skipped) - 10} more)" if len(skipped) > 10 else ""))
        return notes


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def _fmt(value: float | None) -> str:
    return "not assessed" if value is None else f"{value:.1f}"

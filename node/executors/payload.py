"""What travels between the node and a remote worker: the study going out, the result coming back.

Plain picklable dataclasses with no Ray import, so that they can be built and
checked without a cluster.  A :class:`StudyBundle` keeps the study's series
structure (the :class:`~pipelines.base.StudyView` the node built from its spool
index) and either every instance's bytes (``object_store`` transfer: the bundle
is one object in Ray's object store) or only paths as the workers see them
(``shared_filesystem`` transfer).  On the worker :meth:`StudyBundle.materialise`
gives the pipeline a StudyView again.  A :class:`ResultPayload` carries each
result dataset as DICOM Part 10 bytes plus the pipeline's name, version, models
and summary; :meth:`ResultPayload.to_result` turns it back into the
:class:`~pipelines.base.PipelineResult` the node writes and commits.
"""
from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any, Callable

import pydicom

from pipelines.base import InstanceRef, ModelInfo, PipelineResult, SeriesView, StudyView

from ..files import open_private, private_dir

__all__ = ["StudyBundle", "ResultPayload", "PathMapError"]


class PathMapError(ValueError):
    """A spool file lies outside ``node.storage_dir``, so the shared-filesystem path cannot be mapped."""


@dataclasses.dataclass(frozen=True)
class StudyBundle:
    """A study on its way to a worker: its structure plus instance bytes or worker-side paths."""

    study: StudyView
    blobs: tuple[bytes, ...] | None = None  # one per instance, in ``study.instances`` order

    @classmethod
    def with_bytes(cls, study: StudyView) -> "StudyBundle":
        """Read every instance from the spool (object-store transfer)."""
        return cls(study=study, blobs=tuple(ref.path.read_bytes() for ref in study.instances))

    @classmethod
    def with_paths(cls, study: StudyView, node_root: Path, worker_root: Path) -> "StudyBundle":
        """Re-root every path from ``node_root`` (the node's storage dir) to ``worker_root`` (its mount on workers)."""
        node_root = node_root.resolve()

        def move(ref: InstanceRef) -> InstanceRef:
            try:
                rel = ref.path.resolve().relative_to(node_root)
            except ValueError:
                raise PathMapError(f"{ref.path} is not under the node's storage dir {node_root}") from None
            return dataclasses.replace(ref, path=worker_root / rel)

        return cls(study=_map_instances(study, move))

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self.blobs) if self.blobs is not None else 0

    def materialise(self, directory: Path) -> StudyView:
        """The StudyView the pipeline gets: files written under ``directory`` (bytes) or the mapped paths."""
        if self.blobs is None:
            return self.study
        private_dir(directory)
        blobs = iter(self.blobs)

        def write(ref: InstanceRef) -> InstanceRef:
            path = directory / f"{ref.sop_instance_uid}.dcm"
            with open_private(path) as fh:  # patient data: 0600 on the worker too
                fh.write(next(blobs))
            return dataclasses.replace(ref, path=path)

        return _map_instances(self.study, write)


def _map_instances(study: StudyView, fn: Callable[[InstanceRef], InstanceRef]) -> StudyView:
    """The same study with ``fn(ref)`` for every instance, series and order kept."""
    series = tuple(
        SeriesView(
            series_instance_uid=s.series_instance_uid,
            modality=s.modality,
            instances=tuple(fn(ref) for ref in s.instances),
            series_description=s.series_description,
            series_number=s.series_number,
        )
        for s in study.series
    )
    return StudyView(study_instance_uid=study.study_instance_uid, series=series,
                     calling_ae_titles=study.calling_ae_titles)


@dataclasses.dataclass(frozen=True)
class ResultPayload:
    """A :class:`PipelineResult` with its datasets as DICOM Part 10 bytes."""

    datasets: tuple[bytes, ...]
    pipeline_name: str
    pipeline_version: str
    models: tuple[ModelInfo, ...]
    summary: dict[str, Any]

    @classmethod
    def from_result(cls, result: PipelineResult) -> "ResultPayload":
        blobs = []
        for ds in result.datasets:
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            blobs.append(buf.getvalue())
        return cls(datasets=tuple(blobs), pipeline_name=result.pipeline_name,
                   pipeline_version=result.pipeline_version, models=tuple(result.models),
                   summary=dict(result.summary))

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self.datasets)

    def to_result(self) -> PipelineResult:
        return PipelineResult(
            datasets=[pydicom.dcmread(io.BytesIO(b)) for b in self.datasets],
            pipeline_name=self.pipeline_name,
            pipeline_version=self.pipeline_version,
            models=list(self.models),
            summary=dict(self.summary),
        )

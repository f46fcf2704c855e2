"""The pipeline contract: what the node hands a pipeline and what it gets back.

The node builds a :class:`StudyView` from its spool index (series -> instances
with file paths; datasets and pixels are read lazily, only when a pipeline
asks) and calls :meth:`Pipeline.run` with a :class:`PipelineContext` carrying
the pipeline's own options and the shared model store.  The pipeline returns a
:class:`PipelineResult`: pydicom datasets (SR, SEG, ...) plus the name and
version of the pipeline and of every model that produced them.

Errors: raise :class:`PipelineInputError` for studies the pipeline cannot
process (missing series, wrong geometry): the job fails at once with that text
and is not retried.  Raise :class:`TransientPipelineError` for conditions worth
retrying (resource exhaustion).  Any other exception is treated as a failure
of the pipeline itself and recorded with its traceback.
"""
from __future__ import annotations

import dataclasses
import logging
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import pydicom
from pydicom.dataset import Dataset

if TYPE_CHECKING:  # the store imports this module; its handle type is needed for annotations only
    from pipelines.runtime.store import ModelHandle

__all__ = [
    "InstanceRef",
    "SeriesView",
    "StudyView",
    "ModelInfo",
    "ModelSource",
    "PipelineContext",
    "PipelineResult",
    "Pipeline",
    "PipelineError",
    "PipelineInputError",
    "TransientPipelineError",
]


class PipelineError(Exception):
    """Base class for errors a pipeline raises on purpose."""


class PipelineInputError(PipelineError):
    """The study cannot be processed by this pipeline (not retried)."""


class TransientPipelineError(PipelineError):
    """A temporary condition; the job is retried with backoff."""


@dataclasses.dataclass(frozen=True)
class InstanceRef:
    """One stored SOP instance: identifiers from the index and its file path."""

    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    study_instance_uid: str
    path: Path
    modality: str = ""
    instance_number: int | None = None
    transfer_syntax_uid: str = ""

    def read(self, stop_before_pixels: bool = False) -> Dataset:
        """Read the dataset from the spool (pixels decoded only on access)."""
        return pydicom.dcmread(self.path, stop_before_pixels=stop_before_pixels)

    def header(self) -> Dataset:
        """The dataset without pixel data: cheap, for sorting and selection."""
        return self.read(stop_before_pixels=True)


@dataclasses.dataclass(frozen=True)
class SeriesView:
    """One series of the study and its instances (sorted by InstanceNumber, then path)."""

    series_instance_uid: str
    modality: str
    instances: tuple[InstanceRef, ...]
    series_description: str = ""
    series_number: int | None = None

    def __len__(self) -> int:
        return len(self.instances)

    def __iter__(self) -> Iterator[InstanceRef]:
        return iter(self.instances)

    @cached_property
    def first_header(self) -> Dataset:
        """Header of the first instance; convenient for series-level attributes."""
        return self.instances[0].header()

    def headers(self) -> list[Dataset]:
        return [ref.header() for ref in self.instances]

    def datasets(self) -> list[Dataset]:
        return [ref.read() for ref in self.instances]


@dataclasses.dataclass(frozen=True)
class StudyView:
    """Everything the node holds for one study when its job starts."""

    study_instance_uid: str
    series: tuple[SeriesView, ...]
    calling_ae_titles: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[SeriesView]:
        return iter(self.series)

    @property
    def instances(self) -> list[InstanceRef]:
        return [ref for s in self.series for ref in s.instances]

    def by_modality(self, *modalities: str) -> list[SeriesView]:
        wanted = {m.upper() for m in modalities}
        return [s for s in self.series if s.modality.upper() in wanted]

    @classmethod
    def from_files(cls, paths: Sequence[str | Path]) -> "StudyView":
        """Build a view straight from DICOM files (CLI `process`, tests, benchmarks).

        All files must belong to one study.
        """
        refs: dict[str, list[InstanceRef]] = {}
        descr: dict[str, tuple[str, str, int | None]] = {}
        study_uids = set()
        for p in paths:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
            study_uids.add(str(ds.StudyInstanceUID))
            ref = InstanceRef(
                sop_instance_uid=str(ds.SOPInstanceUID),
                sop_class_uid=str(ds.SOPClassUID),
                series_instance_uid=str(ds.SeriesInstanceUID),
                study_instance_uid=str(ds.StudyInstanceUID),
                path=Path(p),
                modality=str(ds.get("Modality", "")),
                instance_number=int(ds.InstanceNumber) if ds.get("InstanceNumber") not in (None, "") else None,
                transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
            )
            refs.setdefault(ref.series_instance_uid, []).append(ref)
            number = ds.get("SeriesNumber")
            descr[ref.series_instance_uid] = (
                ref.modality,
                str(ds.get("SeriesDescription", "")),
                int(number) if number not in (None, "") else None,
            )
        if len(study_uids) != 1:
            raise PipelineInputError(f"files belong to {len(study_uids)} studies, expected exactly one")
        series = tuple(
            SeriesView(
                series_instance_uid=uid,
                modality=descr[uid][0],
                series_description=descr[uid][1],
                series_number=descr[uid][2],
                instances=tuple(sorted(items, key=lambda r: (r.instance_number or 0, str(r.path)))),
            )
            for uid, items in sorted(refs.items())
        )
        return cls(study_instance_uid=study_uids.pop(), series=series)


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """Name and version of a model that contributed to a result (recorded in outputs and job state)."""

    name: str
    version: str
    provenance: str = ""
    provider: str = ""


class ModelSource(Protocol):
    """Where a pipeline gets its models: the node's :class:`pipelines.runtime.ModelStore`, or a test's own."""

    def acquire(self, name: str) -> ModelHandle: ...


@dataclasses.dataclass
class PipelineContext:
    """What a pipeline may use besides the study: its options, models, scratch space, logger.

    ``models`` is the node's shared :class:`pipelines.runtime.ModelStore` (or
    any :class:`ModelSource`), ``None`` on a node started without models; the
    handles a pipeline acquires at the start of a job stay valid for the whole
    job even if a new model version is installed meanwhile.
    """

    options: Mapping[str, Any]
    models: ModelSource | None
    work_dir: Path
    logger: logging.Logger = dataclasses.field(default_factory=lambda: logging.getLogger("cardionode.pipeline"))

    def acquire(self, name: str) -> ModelHandle:
        """The handle of model ``name`` from :attr:`models`; a pipeline that needs a model on a node without
        a model store fails with a message that says so (a configuration error, not a property of the study)."""
        if self.models is None:
            raise RuntimeError(f"model {name!r} is needed but this node has no model store (models: section)")
        return self.models.acquire(name)


@dataclasses.dataclass
class PipelineResult:
    """What a pipeline hands back: result datasets and who made them."""

    datasets: list[Dataset]
    pipeline_name: str
    pipeline_version: str
    models: list[ModelInfo] = dataclasses.field(default_factory=list)
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)


@runtime_checkable
class Pipeline(Protocol):
    """A named, versioned study processor.

    ``name`` is what routes refer to; ``version`` is recorded in every output
    and in job state.  ``modalities`` is informational (status, docs).
    Implementations must not import torch: inference goes through ONNX Runtime.
    """

    name: str
    version: str
    modalities: tuple[str, ...]

    def run(self, study: StudyView, context: PipelineContext) -> PipelineResult:
        ...

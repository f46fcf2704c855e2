"""Who made an output: one description used by SEG (AlgorithmIdentificationSequence), SR (TID 4019
Algorithm Identification + a device observer) and the summary image."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import highdicom as hd
from pydicom.sr.codedict import codes as pydicom_codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from pipelines.base import ModelInfo

from . import codes
from .common import MANUFACTURER, PHANTOM_DISCLAIMER, RESEARCH_DISCLAIMER, software_version

__all__ = ["AlgorithmIdentity"]


@dataclasses.dataclass(frozen=True)
class AlgorithmIdentity:
    """Name, version and provenance of the algorithm (pipeline + models) behind an output.

    Every output says :data:`RESEARCH_DISCLAIMER`; ``trained_on_phantoms`` adds
    :data:`PHANTOM_DISCLAIMER` to every output's visible text.
    """

    name: str
    version: str
    family: str = "CardioNode"
    source: str = ""  # provenance: where the models come from (URL, dataset, licence)
    trained_on_phantoms: bool = False
    parameters: tuple[tuple[str, str], ...] = ()  # extra (key, value) pairs recorded with the algorithm
    family_code: Code = codes.ARTIFICIAL_INTELLIGENCE

    @classmethod
    def from_models(
        cls,
        pipeline_name: str,
        pipeline_version: str,
        models: Sequence[ModelInfo],
        *,
        trained_on_phantoms: bool = False,
        parameters: Sequence[tuple[str, str]] = (),
    ) -> "AlgorithmIdentity":
        """One identity for a pipeline run: ``CardioNode <pipeline>`` with every model's name,
        version and provenance recorded as parameters and in ``source``."""
        params = [(f"model {m.name}", m.version) for m in models]
        params += list(parameters)
        sources = [f"{m.name} {m.version}: {m.provenance or 'no provenance recorded'}"
                   + (f" ({m.provider})" if m.provider else "") for m in models]
        return cls(
            name=f"CardioNode {pipeline_name}",
            version=pipeline_version,
            source="; ".join(sources)[:1024],
            trained_on_phantoms=trained_on_phantoms,
            parameters=tuple(params),
        )

    # -- text ------------------------------------------------------------------------------------
    @property
    def disclaimer(self) -> str:
        """The full disclaimer: research use only, and trained on phantoms where that applies."""
        if self.trained_on_phantoms:
            return f"research use only; {PHANTOM_DISCLAIMER}"
        return RESEARCH_DISCLAIMER

    @property
    def short_disclaimer(self) -> str:
        """The disclaimer within 64 characters (LO attributes such as ContentDescription)."""
        if self.trained_on_phantoms:
            return "RESEARCH ONLY, trained on phantoms - NOT FOR CLINICAL USE"
        return "RESEARCH USE ONLY - NOT FOR CLINICAL USE"

    @property
    def label(self) -> str:
        """``<name> <version> - <disclaimer>``."""
        return f"{self.name} {self.version} - {self.disclaimer}"

    def describe(self, text: str, limit: int = 64) -> str:
        """``text`` marked as research use only (and phantom-trained where that applies) within
        ``limit`` characters (LO is 64): the longest marker that fits, else ``text`` cut so that
        " - NOT FOR CLINICAL USE" fits.  The full disclaimer is always in the algorithm parameters
        and on the summary image."""
        tails = [f" ({self.short_disclaimer.lower()})", f" - {self.short_disclaimer}"]
        tails += [" - PHANTOM MODEL, NOT FOR CLINICAL USE"] if self.trained_on_phantoms else []
        for tail in tails + [" - NOT FOR CLINICAL USE"]:
            if len(text) + len(tail) <= limit:
                return text + tail
        tail = " - NOT FOR CLINICAL USE"
        return text[: limit - len(tail)] + tail

    def parameter_dict(self) -> dict[str, str]:
        out = {k: v for k, v in self.parameters}
        out["software"] = f"{MANUFACTURER} {software_version()}"
        out["disclaimer"] = self.disclaimer
        return out

    # -- DICOM representations -----------------------------------------------------------------------
    def to_highdicom(self) -> hd.AlgorithmIdentificationSequence:
        """AlgorithmIdentificationSequence for SEG segment descriptions."""
        return hd.AlgorithmIdentificationSequence(
            name=self.name[:64],
            family=self.family_code,
            version=self.version[:64],
            source=(self.source or self.family)[:64] if (self.source or self.family) else None,
            parameters=self.parameter_dict(),
        )

    def to_sr(self, *, full: bool = True) -> hd.sr.AlgorithmIdentification:
        """TID 4019 Algorithm Identification (Algorithm Name / Version / Parameters).

        ``full``: every parameter (models, software, disclaimer, provenance); otherwise only the
        disclaimer -- for measurement groups, where the full list would repeat on every group."""
        if full:
            params = [f"{k}={v}" for k, v in self.parameter_dict().items()]
            if self.source:
                params.append(f"source={self.source}")
        else:
            params = [f"disclaimer={self.disclaimer}"]
        return hd.sr.AlgorithmIdentification(name=self.name, version=self.version, parameters=params)

    @property
    def device_uid(self) -> str:
        """A stable UID for the device observer: same name+version -> same UID."""
        return str(generate_uid(prefix=None, entropy_srcs=["cardionode-device", self.name, self.version]))

    def observer_context(self) -> hd.sr.ObserverContext:
        """Device observer context (TID 1004) for the SR's observation context."""
        return hd.sr.ObserverContext(
            observer_type=pydicom_codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=self.device_uid,
                name=self.name[:64],
                manufacturer_name=MANUFACTURER,
                model_name=f"{self.name} {self.version}"[:64],
            ),
        )

"""`cardionode sample xa|ct|mr`: phantom studies a new user can send; each is one study of its own (no
shared UIDs between kinds), says it is a phantom, and the shipped conf/node.yaml routes it to its pipeline."""
from __future__ import annotations

from pathlib import Path

import pydicom

from node.config import load_config
from node.routing import InstanceFacts, Router
from tests.test_quickstart import SHIPPED
from training.datasets.samples import SAMPLES, write_sample


def test_each_sample_is_its_own_phantom_study_and_is_routed_to_its_pipeline(tmp_path: Path) -> None:
    router = Router(load_config(SHIPPED))
    studies = {}
    for kind, (_what, pipeline, _writer) in SAMPLES.items():
        files = write_sample(kind, tmp_path / kind, seed=1)
        headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
        assert len({str(h.StudyInstanceUID) for h in headers}) == 1
        assert len({str(h.SOPInstanceUID) for h in headers}) == len(files)
        assert all(str(h.PatientName).startswith("PHANTOM^") for h in headers)
        facts = [InstanceFacts(modality=str(h.Modality), sop_class_uid=str(h.SOPClassUID),
                               series_description=str(h.get("SeriesDescription", ""))) for h in headers]
        assert [d.pipeline for d in router.decide(facts)] == [pipeline]
        studies[kind] = str(headers[0].StudyInstanceUID)
    assert len(set(studies.values())) == len(SAMPLES)  # an XA and a CT sample never merge into one study
    again = write_sample("xa", tmp_path / "again", seed=1)
    assert str(pydicom.dcmread(again[0], stop_before_pixels=True).StudyInstanceUID) == studies["xa"]  # reproducible

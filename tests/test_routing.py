"""Routing rules: modality, SOP class, series description regex, calling AE; several routes per study."""
from __future__ import annotations

from pipelines.base import InstanceRef, SeriesView, StudyView
from node.config import parse_config
from node.routing import InstanceFacts, Router, facts_from_study

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"


def _config(routes, quiet=30):
    return parse_config({
        "node": {"quiet_seconds": quiet},
        "destinations": {"pacs": {"type": "dimse", "ae_title": "PACS", "host": "127.0.0.1", "port": 104}},
        "routes": routes,
    })


def _study(series_specs, calling=("MOD1",)):
    series = []
    for k, (modality, sop_class, descr) in enumerate(series_specs):
        uid = f"1.2.3.{k}"
        refs = (InstanceRef(f"1.2.3.{k}.1", sop_class, uid, "1.2.3", path=__file__, modality=modality),)
        series.append(SeriesView(uid, modality, refs, series_description=descr))
    return StudyView("1.2.3", tuple(series), calling_ae_titles=tuple(calling))


def test_all_criteria_of_one_route_must_hold_for_one_instance():
    router = Router(_config([
        {"name": "lge", "pipeline": "myops", "destinations": ["pacs"],
         "match": {"modality": "MR", "sop_class": [MR], "series_description": "(?i)lge|late", "calling_ae": "MOD1"}},
    ]))
    assert [d.name for d in router.decide(facts_from_study(_study([("MR", MR, "LGE short axis")])))] == ["lge"]
    # wrong description, wrong caller, wrong SOP class: no match
    assert router.decide(facts_from_study(_study([("MR", MR, "cine")]))) == []
    assert router.decide(facts_from_study(_study([("MR", MR, "LGE")], calling=("OTHER",)))) == []
    assert router.decide(facts_from_study(_study([("MR", CT, "LGE")]))) == []
    # criteria split across two series do not combine
    assert router.decide(facts_from_study(_study([("MR", MR, "cine"), ("CT", CT, "LGE")]))) == []


def test_one_study_triggers_several_routes_in_config_order_and_unmatched_is_empty():
    router = Router(_config([
        {"pipeline": "calcium", "match": {"modality": ["CT"]}, "destinations": ["pacs"]},
        {"pipeline": "other", "match": {"modality": "ct"}},
        {"pipeline": "syntax", "match": {"modality": "XA"}},
    ]))
    decisions = router.decide(facts_from_study(_study([("CT", CT, "")])))
    assert [(d.name, d.pipeline, d.destinations) for d in decisions] == [
        ("route0-calcium", "calcium", ("pacs",)), ("route1-other", "other", ())]
    assert router.decide(facts_from_study(_study([("MR", MR, "")]))) == []


def test_quiet_seconds_is_the_longest_of_routes_the_instance_could_match():
    router = Router(_config([
        {"pipeline": "a", "match": {"modality": "CT"}, "quiet_seconds": 5},
        {"pipeline": "b", "match": {"modality": "CT", "series_description": "calc"}, "quiet_seconds": 60},
        {"pipeline": "c", "match": {"modality": "MR"}, "quiet_seconds": 120},
    ], quiet=30))
    # series description unknown at arrival -> route b could still match
    assert router.quiet_seconds(InstanceFacts(modality="CT")) == 60
    assert router.quiet_seconds(InstanceFacts(modality="CT", series_description="plain")) == 5
    assert router.quiet_seconds(InstanceFacts(modality="US")) == 30


# ---------------------------------------------------------------------------------------------- any DICOM keyword
def _files_study(tmp_path, **headers):
    """A one-series CT study on disk whose first instance carries ``headers``."""
    import pydicom

    from tests.fixtures.studies import write_ct_study

    files = write_ct_study(tmp_path, 2)
    for f in files:
        ds = pydicom.dcmread(f)
        for k, v in headers.items():
            setattr(ds, k, v)
        ds.save_as(f)
    refs = tuple(InstanceRef(str(pydicom.dcmread(f).SOPInstanceUID), CT, "1.2.3.9", "1.2.3", path=f, modality="CT")
                 for f in files)
    return StudyView("1.2.3", (SeriesView("1.2.3.9", "CT", refs, series_description="calcium score"),),
                     calling_ae_titles=("CT1",))


def test_routes_match_any_dicom_keyword_exactly_from_a_list_or_by_regex(tmp_path):
    router = Router(_config([
        {"name": "heart", "pipeline": "calcium", "match": {"keywords": {"BodyPartExamined": ["HEART", "CHEST"]}}},
        {"name": "siemens", "pipeline": "calcium", "match": {"keywords": {"Manufacturer": "SIEMENS"}}},
        {"name": "gated", "pipeline": "calcium", "match": {"modality": "CT", "regex": {"ProtocolName": "(?i)gated"}}},
        {"name": "missing", "pipeline": "calcium", "match": {"keywords": {"StationName": "CT7"}}},
    ]))
    assert router.keywords == ("BodyPartExamined", "Manufacturer", "ProtocolName", "StationName")
    study = _files_study(tmp_path, BodyPartExamined="CHEST", Manufacturer="GE MEDICAL SYSTEMS",
                         ProtocolName="Cardiac ECG-Gated Ca")
    facts = facts_from_study(study, None, router.keywords)
    assert [d.name for d in router.decide(facts)] == ["heart", "gated"]
    why = {e.name: (e.matches, e.why) for e in router.explain(facts)}
    assert why["siemens"] == (False, "Manufacturer GE MEDICAL SYSTEMS is not SIEMENS")
    assert why["missing"] == (False, "StationName (none) is not CT7")  # absent from the header
    assert why["heart"][0] and "meets every criterion" in why["heart"][1]
    # while instances arrive (values not read yet) keyword criteria count as matching for the quiet period
    assert router.quiet_seconds(InstanceFacts(modality="CT")) == 30


def test_a_route_keyword_must_be_a_dicom_keyword_and_its_regex_must_compile():
    import pytest

    from node.config import ConfigError

    with pytest.raises(ConfigError, match=r"routes\[0\]\.match\.keywords\.BodyPart: not a DICOM keyword"):
        _config([{"pipeline": "a", "match": {"keywords": {"BodyPart": "HEART"}}}])
    with pytest.raises(ConfigError, match=r"routes\[0\]\.match\.regex\.StudyDescription: invalid regex"):
        _config([{"pipeline": "a", "match": {"regex": {"StudyDescription": "(unclosed"}}}])
    with pytest.raises(ConfigError, match="a sequence"):
        _config([{"pipeline": "a", "match": {"keywords": {"ReferencedSeriesSequence": "x"}}}])


def test_urgent_jobs_are_claimed_before_routine_ones(tmp_path):
    import time

    from node.state import Connections, Jobs, enqueue_job, transaction

    router = Router(_config([{"name": "routine", "pipeline": "calcium", "match": {"modality": "CT"}},
                             {"name": "urgent", "pipeline": "syntax", "match": {"modality": "CT"}, "priority": 10}]))
    decisions = router.decide(facts_from_study(_study([("CT", CT, "")])))
    assert [(d.name, d.priority) for d in decisions] == [("routine", 0), ("urgent", 10)]
    conns = Connections(tmp_path)
    try:
        now = time.time()
        with transaction(conns.get()) as conn:
            for uid in ("1.1", "1.2"):  # routine jobs queued first
                enqueue_job(conn, uid, 1, "routine", "calcium", [], now - 60, 0)
            enqueue_job(conn, "1.3", 1, "urgent", "syntax", [], now, 10)
        jobs = Jobs(conns.get)
        assert [jobs.claim(now + 1)["study_uid"] for _ in range(3)] == ["1.3", "1.1", "1.2"]
    finally:
        conns.close_all()

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

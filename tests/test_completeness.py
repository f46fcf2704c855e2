"""Series completeness from headers (node.completeness), route requirements in the config, and the
header values the spool indexes for them (real files, real SQLite index)."""
from __future__ import annotations

import dataclasses

import pytest
from pydicom.uid import generate_uid

from node.completeness import HeaderFacts, route_readiness, series_state, series_states
from node.config import ConfigError, SeriesRequirement, parse_config
from node.state import InstanceIndex, connect
from node.spool import Spool
from tests.fixtures.studies import write_ct_study, write_mr_series
from tests.support import synth

XA = "1.2.840.10008.5.1.4.1.1.12.1"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
MR = "1.2.840.10008.5.1.4.1.1.4"
CT = "1.2.840.10008.5.1.4.1.1.2"


def _facts(n: int, series: str = "1.2.3", **kw) -> list[HeaderFacts]:
    return [HeaderFacts(series_instance_uid=series, instance_number=i + 1,
                        **{k: (v(i) if callable(v) else v) for k, v in kw.items()}) for i in range(n)]


def test_a_multi_frame_xa_run_or_enhanced_object_is_complete_on_arrival():
    assert series_state(_facts(1, sop_class_uid=XA, modality="XA", frames=30)).status == "complete"
    assert series_state(_facts(1, sop_class_uid=ENHANCED_MR, modality="MR", frames=250)).status == "complete"
    assert series_state(_facts(1, sop_class_uid=CT, modality="CT", frames=3)).rule == "multi-frame"


def test_a_concatenation_is_complete_with_all_its_parts():
    parts = _facts(2, sop_class_uid=ENHANCED_MR, frames=100, concatenation_uid="9.9",
                   concatenation_number=lambda i: i + 1, concatenation_total=3)
    state = series_state(parts)
    assert (state.status, state.rule, state.expected) == ("incomplete", "concatenation", 3)
    third = dataclasses.replace(parts[0], concatenation_number=3)
    assert series_state(parts + [third]).status == "complete"


@pytest.mark.parametrize("key", ["temporal_positions", "cardiac_images"])
def test_a_cine_needs_every_phase_at_every_slice_position(key):
    cine = _facts(10, sop_class_uid=MR, modality="MR", position=lambda i: f"0\\0\\{8 * (i // 5)}", **{key: 5})
    assert series_state(cine).status == "complete"
    assert series_state(cine).expected == 10
    state = series_state(cine[:9])  # the second position has 4 of its 5 phases
    assert (state.status, state.rule) == ("incomplete", "cine")
    # ImagesInAcquisition, where present, counts positions not seen yet
    more = [dataclasses.replace(f, images_in_acquisition=15) for f in cine]
    assert (series_state(more).status, series_state(more).expected) == ("incomplete", 15)


def test_images_in_acquisition_counts_each_acquisition():
    ct = _facts(4, sop_class_uid=CT, modality="CT", images_in_acquisition=4)
    assert series_state(ct[:3]).status == "incomplete"
    assert series_state(ct).status == "complete"
    two = ct + _facts(2, sop_class_uid=CT, images_in_acquisition=3, acquisition_number=2)
    assert series_state(two).status == "incomplete"
    assert series_state(two + _facts(1, sop_class_uid=CT, images_in_acquisition=3, acquisition_number=2)).status \
        == "complete"


def test_a_series_whose_headers_say_nothing_is_unknown():
    state = series_state(_facts(40, sop_class_uid=CT, modality="CT"))
    assert (state.status, state.expected) == ("unknown", None)


def _req(**kw) -> SeriesRequirement:
    return SeriesRequirement(**{"name": "r", **kw})


def test_requirements_match_by_description_regex_and_sequence_tags_and_count_complete_series():
    cine = _facts(4, series="1", sop_class_uid=MR, modality="MR", series_description="sax bSSFP cine",
                  temporal_positions=4, position="0\\0\\0", scanning_sequence="GR", sequence_variant="SS\\SP",
                  sequence_name="*tfi2d1_25")
    lge = _facts(3, series="2", sop_class_uid=MR, modality="MR", series_description="LGE PSIR",
                 images_in_acquisition=3, scanning_sequence="GR\\IR", sequence_name="*fl2d1r")
    t2 = _facts(2, series="3", sop_class_uid=MR, modality="MR", series_description="T2 STIR",
                images_in_acquisition=3)
    series = series_states(cine + lge + t2)
    reqs = [_req(name="bssfp", series_description="(?i)ssfp"),
            _req(name="lge", scanning_sequence=["IR"], sequence_name="fl2d"),
            _req(name="t2", series_description="^T2")]
    r = route_readiness(reqs, series)
    assert (r.ready, r.present, r.missing) == (False, False, ("t2",))  # T2 known incomplete (2 of 3)
    series = series_states(cine + lge + t2 + _facts(1, series="3", sop_class_uid=MR, modality="MR",
                                                   series_description="T2 STIR", images_in_acquisition=3))
    r = route_readiness(reqs, series)
    assert (r.ready, r.present, r.missing) == (True, True, ())
    # sequence variant: SS is among the cine's values; the LGE has none
    assert route_readiness([_req(sequence_variant=["ss"], modality=["MR"])], series).ready
    assert not route_readiness([_req(sequence_variant=["ss"], series_description="LGE")], series).present
    # two XA runs wanted, one stored: present in neither sense
    xa = series_states(_facts(1, series="9", sop_class_uid=XA, modality="XA", frames=20))
    assert route_readiness([_req(modality=["XA"], min_series=2)], xa).missing == ("r",)
    # a series of unknown completeness is accepted after the quiet period, never at once
    plain = series_states(_facts(5, series="8", sop_class_uid=CT, modality="CT"))
    r = route_readiness([_req(modality=["CT"])], plain)
    assert (r.ready, r.present) == (False, True)


def _route(**kw):
    return {"routes": [{"pipeline": "myops", "match": {"modality": "MR"}, **kw}]}


def test_route_requirements_are_checked_at_load_with_their_key_path():
    ok = parse_config(_route(requires=[{"name": "bssfp", "series_description": "(?i)ssfp"},
                                       {"name": "lge", "scanning_sequence": "IR", "min_series": 1}],
                             max_wait_seconds=600, incomplete="give_up"))
    route = ok.routes[0]
    assert [r.name for r in route.requires] == ["bssfp", "lge"] and route.requires[1].scanning_sequence == ("IR",)
    assert (route.incomplete, route.max_wait_seconds) == ("give_up", 600.0)
    assert ok.node.settle_seconds == 0.5
    cases = [
        (_route(requires=[{"name": "a", "modality": "MR"}, {"name": "b", "series_description": "(unclosed"}]),
         "routes[0].requires[1].series_description: invalid regex"),
        (_route(requires=[{"name": "a"}]), "routes[0].requires[0]: give at least one of"),
        (_route(requires=[{"name": "a", "modality": "MR"}, {"name": "a", "modality": "CT"}]),
         "routes[0].requires[1].name: 'a' is given twice"),
        (_route(requires=[{"name": "a", "modality": "MR"}], incomplete="wait"),
         "routes[0].max_wait_seconds: required with incomplete: wait"),
        (_route(incomplete="give_up", max_wait_seconds=5), "routes[0].incomplete: 'give_up' needs requires"),
        (_route(requires=[{"name": "a", "modality": "MR", "min_series": 0}]), "routes[0].requires[0].min_series"),
        (_route(requires=[{"name": "a", "modality": "MR", "slices": 3}]), "routes[0].requires[0].slices: unknown key"),
        (_route(incomplete="later"), "routes[0].incomplete: 'later' is not allowed"),
        ({"node": {"settle_seconds": -1}}, "node.settle_seconds: must be >= 0"),
    ]
    for data, message in cases:
        with pytest.raises(ConfigError) as err:
            parse_config(data)
        assert message in str(err.value), (message, str(err.value))


def test_the_spool_indexes_the_header_values_and_recovery_restores_them(tmp_path):
    study = generate_uid()
    files = (write_mr_series(tmp_path / "cine", study, "cine bSSFP", positions=2, phases=3,
                             tags={"ScanningSequence": ["GR"], "SequenceVariant": ["SS", "SP"]})
             + write_ct_study(tmp_path / "ct", 2, study_uid=study, tags={"ImagesInAcquisition": 2})
             + [synth.xa_cine(tmp_path / "xa.dcm", frames=4, size=16, study_uid=study)])
    spool = Spool(tmp_path / "var", 0)
    try:
        for f in files:
            spool.store_file(f, "TEST", "dimse")
        conn = connect(tmp_path / "var")
        states = {s.modality: s for s in series_states(InstanceIndex(conn).study_headers(study))}
        assert {m: (s.status, s.rule, s.received) for m, s in states.items()} == {
            "MR": ("complete", "cine", 6), "CT": ("complete", "images-in-acquisition", 2),
            "XA": ("complete", "multi-frame", 1)}
        assert states["MR"].scanning_sequence == ("GR",) and states["MR"].sequence_variant == ("SS", "SP")
        conn.execute("DELETE FROM instances")  # as if a crash lost the index rows
        spool.recover()
        again = {s.modality: (s.status, s.received) for s in series_states(InstanceIndex(conn).study_headers(study))}
        assert again == {"MR": ("complete", 6), "CT": ("complete", 2), "XA": ("complete", 1)}
        conn.close()
    finally:
        spool.close()


def test_a_database_from_before_gains_the_columns_and_its_series_count_as_unknown(tmp_path):
    import sqlite3
    from pathlib import Path

    from node.state import DB_FILENAME, Studies

    plain = sqlite3.connect(tmp_path / DB_FILENAME)
    plain.executescript((Path(__file__).parent / "fixtures" / "state_schema_v1.sql").read_text())
    plain.execute("INSERT INTO instances VALUES ('1.1', '1', '1.2', ?, 'CT', '', 1, 1, '1.2.840.10008.1.2.1',"
                  " 'spool/x.dcm', 1, '', '', 0)", (CT,))
    plain.commit()
    plain.close()
    conn = connect(tmp_path)  # migrates to the current version
    assert "header" in {r[1] for r in conn.execute("PRAGMA table_info(instances)")}
    assert "incomplete" in {r[1] for r in conn.execute("PRAGMA table_info(pending_studies)")}
    assert series_states(InstanceIndex(conn).study_headers("1"))[0].status == "unknown"
    assert Studies(lambda: conn).listing(5) == []
    conn.close()

"""Pipeline options are read by the configuration's own loader (configschema) when the node starts: a wrong
or misspelt key under ``pipelines:`` stops ``serve`` with its key path, instead of failing every job."""
from __future__ import annotations

from pathlib import Path

import pytest

from configschema import ConfigError
from node.config import parse_config
from node.service import check_pipeline_options
from pipelines.base import PipelineInputError
from pipelines.calcium.options import CalciumOptions
from pipelines.myops.options import MyopsOptions
from pipelines.options import OptionsError
from pipelines.registry import default_registry
from pipelines.syntax.options import SyntaxOptions


def _check(pipelines: dict) -> None:
    check_pipeline_options(parse_config({"pipelines": pipelines}), default_registry())


@pytest.mark.parametrize("pipelines, key", [
    ({"calcium": {"treshold_hu": 100}}, "pipelines.calcium.treshold_hu: unknown key"),
    ({"calcium": {"series": {"max_thicknes_mm": 3}}}, "pipelines.calcium.series.max_thicknes_mm: unknown key"),
    ({"calcium": {"threshold_hu": "high"}}, "pipelines.calcium.threshold_hu: expected a number"),
    ({"calcium": {"connectivity": 6}}, "pipelines.calcium.connectivity: 6 is not allowed"),
    ({"syntax": {"folds": [0, -1]}}, "pipelines.syntax.folds"),
    ({"syntax": {"calibrate": "yes"}}, "pipelines.syntax.calibrate: expected true or false"),
    ({"myops": {"series": {"flair": ["x"]}}}, "pipelines.myops.series.flair: unknown sequence"),
    ({"calcum": {"threshold_hu": 100}}, "pipelines.calcum: unknown pipeline"),
])
def test_a_wrong_key_under_pipelines_stops_start_up_with_its_path(pipelines: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        _check(pipelines)
    assert str(err.value).startswith(key) and "\n" not in str(err.value)


def test_valid_options_pass_and_parse_to_the_typed_classes() -> None:
    _check({"calcium": {"threshold_hu": 120, "series": {"include": "Chest"}}, "syntax": {"folds": [0, 0, 2]},
            "myops": {"registration": False}})
    registry = default_registry()
    assert registry.parse_options("calcium", {"threshold_hu": 120}) == CalciumOptions(threshold_hu=120.0)
    assert registry.parse_options("syntax", {"folds": [0, 0, 2], "modalities": "xa"}).folds == (0, 2)
    assert registry.parse_options("myops", None) == MyopsOptions()


def test_one_error_class_for_load_and_for_jobs() -> None:
    for parse in (CalciumOptions.parse, SyntaxOptions.parse, MyopsOptions.parse):
        with pytest.raises(OptionsError) as err:
            parse({"no_such_key": 1})
        assert isinstance(err.value, ConfigError) and isinstance(err.value, PipelineInputError)


def test_the_same_words_as_the_rest_of_the_configuration() -> None:
    with pytest.raises(ConfigError) as node_err:
        parse_config({"jobs": {"max_attempts": "many"}})
    with pytest.raises(OptionsError) as options_err:
        CalciumOptions.parse({"slab_slices": "many"})
    assert str(node_err.value) == "jobs.max_attempts: expected an integer, got 'many'"
    assert str(options_err.value) == "pipelines.calcium.slab_slices: expected an integer, got 'many'"


@pytest.mark.integration
def test_serve_stops_at_a_misspelt_pipeline_option(tmp_path: Path) -> None:
    from tests.test_startup_errors import one_line, serve

    r = serve(tmp_path / "work", "--set", "pipelines.calcium.treshold_hu=100")
    one_line(r, 2, "pipelines.calcium.treshold_hu", "unknown key")
    assert not (tmp_path / "work" / "var" / "cardionode.pid").exists()

"""Config validation: the documented shape loads; every mistake names its key."""
from __future__ import annotations

from pathlib import Path

import pytest

from node.config import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[1]

ISSUE_SHAPE = """
node:
  ae_title: CARDIONODE
  port: 11112
  storage_dir: ./var
  quiet_seconds: 30
destinations:
  pacs: {type: dimse, ae_title: PACS, host: 127.0.0.1, port: 4242}
routes:
  - match: {modality: CT}
    pipeline: calcium
    destinations: [pacs]
"""


def test_default_config_file_loads() -> None:
    config = load_config(REPO / "conf" / "node.yaml")
    assert config.node.ae_title == "CARDIONODE"
    assert config.node.port == 11112
    assert config.node.storage_dir == "./var"
    assert {r.pipeline for r in config.routes} >= {"calcium", "syntax", "myops"}


def test_issue_shape_loads_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(ISSUE_SHAPE)
    config = load_config(path)
    assert config.destinations["pacs"].port == 4242
    assert config.routes[0].match.modality == ("CT",)
    assert config.routes[0].destinations == ("pacs",)
    assert config.node.quiet_seconds == 30.0


def test_empty_routes_are_valid() -> None:
    assert parse_config({"routes": []}).routes == ()


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"node": {"prot": 1}}, "node.prot: unknown key"),
        ({"nodes": {}}, "nodes: unknown key"),
        ({"node": {"port": "x"}}, "node.port: expected an integer"),
        ({"node": {"port": 70000}}, "node.port: 70000 is not a TCP port"),
        ({"node": {"ae_title": "WAY_TOO_LONG_AE_TITLE"}}, "node.ae_title"),
        ({"node": {"log_format": "xml"}}, "node.log_format: 'xml' is not allowed"),
        ({"node": {"late_arrivals": "drop"}}, "node.late_arrivals"),
        ({"destinations": {"a": {"type": "ftp"}}}, "destinations.a.type: 'ftp' is not allowed"),
        ({"destinations": {"a": {"type": "dimse", "ae_title": "X", "host": "h"}}}, "destinations.a.port: required key is missing"),
        ({"destinations": {"a": {"type": "dicomweb", "url": "ftp://x"}}}, "destinations.a.url"),
        ({"routes": [{"pipeline": "x", "destinations": ["zz"]}]}, "routes[0].destinations: unknown destination 'zz'"),
        ({"routes": [{"match": {"series_description": "("}, "pipeline": "a"}]}, "routes[0].match.series_description: invalid regex"),
        ({"routes": [{"match": {"modality": "CT"}}]}, "routes[0].pipeline: required key is missing"),
        ({"models": {"providers": ["rocm"]}}, "models.providers[0]: 'rocm' is not allowed"),
        ({"executor": {"type": "spark"}}, "executor.type: 'spark' is not allowed (allowed: 'local', 'ray')"),
        ({"executor": {"type": "local", "address": "auto"}}, "executor.address: unknown key (allowed here: type)"),
        ({"executor": {"type": "ray", "adress": "auto"}}, "executor.adress: unknown key"),
        ({"executor": {"type": "ray", "address": "http://head:10001"}}, "executor.address: 'http://head:10001' is not"),
        ({"executor": {"type": "ray", "address": "ray://head:99999"}}, "executor.address: 99999 is not a TCP port"),
        ({"executor": {"type": "ray", "max_in_flight": 0}}, "executor.max_in_flight: must be >= 1"),
        ({"executor": {"type": "ray", "transfer": "nfs"}}, "executor.transfer: 'nfs' is not allowed"),
        ({"executor": {"type": "ray", "worker_storage_dir": "/mnt/x"}}, "executor.worker_storage_dir: only used with"),
        ({"executor": {"type": "ray", "address": "auto", "embedded": {"num_cpus": 2}}}, "executor.embedded: only used"),
        ({"executor": {"type": "ray", "embedded": {"object_store_mb": 10}}}, "executor.embedded.object_store_mb"),
        ({"executor": {"type": "ray", "pipelines": {"calcium": {"num_gpus": 1.5}}}},
         "executor.pipelines.calcium.num_gpus: Ray takes fractions only below 1"),
        ({"executor": {"type": "ray", "pipelines": {"calcium": {"num_cpus": -1}}}},
         "executor.pipelines.calcium.num_cpus: must be >= 0"),
        ({"executor": {"type": "ray", "pipelines": {"calcium": {"actors": 0}}}},
         "executor.pipelines.calcium.actors: must be >= 1"),
        ({"executor": {"type": "ray", "pipelines": {"calcium": {"gpus": 1}}}},
         "executor.pipelines.calcium.gpus: unknown key"),
        ({"executor": {"type": "ray", "pipelines": {"calcium": {"resources": {"GPU": 1}}}}},
         "executor.pipelines.calcium.resources.GPU: Ray's own resource"),
        ({"executor": {"type": "ray", "pipelines": {"calcium": {"resources": {"a100": 0}}}}},
         "executor.pipelines.calcium.resources.a100: must be > 0"),
    ],
)
def test_mistakes_name_the_key(data: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        parse_config(data)
    assert fragment in str(excinfo.value)


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("node: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_executor_defaults_to_local_and_ray_section_loads() -> None:
    assert parse_config({}).executor.type == "local"
    ex = parse_config({"executor": {"type": "ray", "address": "ray://head.example:10001", "max_in_flight": 8,
                                    "pipelines": {"calcium": {"actors": 2, "num_gpus": 1, "num_cpus": 4,
                                                              "memory_mb": 8192, "resources": {"a100": 1}}}}}).executor
    assert ex.type == "ray" and ex.address == "ray://head.example:10001" and ex.max_in_flight == 8
    calcium = ex.resources_for("calcium")
    assert (calcium.actors, calcium.num_gpus, calcium.num_cpus, calcium.memory_mb) == (2, 1.0, 4.0, 8192)
    assert dict(calcium.resources) == {"a100": 1.0}
    assert ex.resources_for("syntax").actors == 1  # pipelines not listed: one actor with one CPU
    for address in ("auto", "10.0.0.5:6379", None):
        assert parse_config({"executor": {"type": "ray", "address": address}}).executor.address == address

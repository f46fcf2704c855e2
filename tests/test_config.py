"""Config validation: the documented shape loads; every mistake names its key."""
from __future__ import annotations

from pathlib import Path

import pytest

import argparse

from node.cli import config_from_args
from node.config import ConfigError, apply_overrides, load_config, parse_config, parse_override

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
    assert config.node.storage_dir == str(Path.cwd() / "var")  # ./var, made absolute at load
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
        ({"node": {"ingest_processes": 0}}, "node.ingest_processes: must be >= 1"),
        ({"destinations": {"a": {"type": "ftp"}}}, "destinations.a.type: 'ftp' is not allowed"),
        ({"destinations": {"a": {"type": "dimse", "ae_title": "X", "host": "h"}}},
         "destinations.a.port: required key is missing"),
        ({"destinations": {"a": {"type": "dicomweb", "url": "ftp://x"}}}, "destinations.a.url"),
        ({"routes": [{"pipeline": "x", "destinations": ["zz"]}]}, "routes[0].destinations: unknown destination 'zz'"),
        ({"routes": [{"match": {"series_description": "("}, "pipeline": "a"}]},
         "routes[0].match.series_description: invalid regex"),
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
        ({"executor": {"type": "ray", "transfer": "shared_filesystem", "worker_storage_dir": "mnt/x"}},
         "executor.worker_storage_dir: 'mnt/x' must be an absolute path"),
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
    with pytest.raises(ConfigError, match="not valid YAML") as excinfo:
        load_config(bad)
    assert "\n" not in str(excinfo.value) and "line 1" in str(excinfo.value)  # one line, with the place


PATH_KEYS = {
    "node": {"storage_dir": "./var", "plugins": ["site_pipelines.ffr", "plugins/ffr.py"],
             "tls": {"certificate": "pki/node.pem", "private_key": "pki/node.key", "ca_certificates": "pki/ca.pem"},
             "http_tls": {"certificate": "pki/http.pem", "private_key": "~/http.key"}},
    "models": {"dir": "models", "tensorrt_cache_dir": "../trt-cache"},
    "api": {"token_file": "secrets/token"},
    "executor": {"type": "ray", "auth_token_file": "secrets/ray-token"},
    "destinations": {"pacs": {"type": "dimse", "ae_title": "PACS", "host": "h", "port": 104,
                              "tls": {"certificate": "pki/client.pem", "private_key": "/etc/pki/client.key"}}},
}


def test_every_relative_path_is_made_absolute_once_against_the_working_directory(tmp_path, monkeypatch) -> None:
    """One rule for every path key: relative to the working directory of the command, at load time."""
    cfg = tmp_path / "conf" / "node.yaml"
    cfg.parent.mkdir()
    import yaml

    cfg.write_text(yaml.safe_dump(PATH_KEYS))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    c = load_config(cfg)
    assert c.node.storage_dir == str(work / "var")  # not the config's folder, not "./var"
    assert c.node.storage_path.is_absolute()
    assert c.node.plugins == ("site_pipelines.ffr", str(work / "plugins" / "ffr.py"))  # module names stay names
    assert (c.node.tls.certificate, c.node.tls.private_key, c.node.tls.ca_certificates) == (
        str(work / "pki/node.pem"), str(work / "pki/node.key"), str(work / "pki/ca.pem"))
    assert c.node.http_tls.private_key == str(Path.home() / "http.key")
    assert (c.models.dir, c.models.tensorrt_cache_dir) == (str(work / "models"), str(tmp_path / "trt-cache"))
    assert c.api.token_file == str(work / "secrets/token")
    assert c.executor.auth_token_file == str(work / "secrets/ray-token")
    assert c.destinations["pacs"].tls.certificate == str(work / "pki/client.pem")
    assert c.destinations["pacs"].tls.private_key == "/etc/pki/client.key"
    # the same file from another working directory: another place, but again absolute
    monkeypatch.chdir(tmp_path)
    assert load_config(cfg).node.storage_dir == str(tmp_path / "var")


def test_overrides_set_any_key_and_are_validated_like_the_file(tmp_path) -> None:
    assert parse_override("node.quiet_seconds=2.5") == ("node.quiet_seconds", 2.5)
    assert parse_override("node.allowed_callers=[A, B@h]") == ("node.allowed_callers", ["A", "B@h"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("node.port")
    data = {"destinations": {"pacs": {"type": "dimse", "ae_title": "PACS", "host": "h", "port": 4242}}}
    out = apply_overrides(data, [("destinations.pacs.port", 4243), ("node.port", 1)])
    assert out["destinations"]["pacs"]["port"] == 4243 and data["destinations"]["pacs"]["port"] == 4242
    shipped = REPO / "conf" / "node.yaml"
    c = load_config(shipped, [("node.storage_dir", "elsewhere")], base_dir=tmp_path)
    assert c.node.storage_dir == str(tmp_path / "elsewhere")  # an overridden path follows the same rule
    with pytest.raises(ConfigError, match="node.port: expected an integer"):
        load_config(shipped, [("node.port", "abc")])
    with pytest.raises(ConfigError, match="node.prot: unknown key"):
        load_config(shipped, [("node.prot", 1)])


def _args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"config": None, "overrides": [], "port": None, "http_port": None, **kw})


def test_port_flags_beat_environment_beat_file() -> None:
    shipped = str(REPO / "conf" / "node.yaml")
    env = {"CARDIONODE_PORT": "11200", "CARDIONODE_HTTP_PORT": "8200"}
    c = config_from_args(_args(config=shipped), env)
    assert (c.node.port, c.node.http_port) == (11200, 8200)
    c = config_from_args(_args(config=shipped, overrides=["node.port=11300"], http_port=8300), env)
    assert (c.node.port, c.node.http_port) == (11300, 8300)
    c = config_from_args(_args(config=shipped, overrides=["node.port=11300"], port=11400), env)
    assert c.node.port == 11400
    c = config_from_args(_args(), {"CARDIONODE_CONFIG": shipped})
    assert c.source_path == shipped and {r.pipeline for r in c.routes} == {"calcium", "syntax", "myops"}
    with pytest.raises(ConfigError, match="CARDIONODE_PORT: 'x' is not a port number"):
        config_from_args(_args(config=shipped), {"CARDIONODE_PORT": "x"})
    with pytest.raises(ConfigError, match="node.http_port: 11112 is also node.port"):
        config_from_args(_args(config=shipped, http_port=11112), {})


def test_a_plugin_given_as_a_relative_file_loads_from_any_working_directory(tmp_path, monkeypatch) -> None:
    from pipelines.registry import default_registry

    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "site_ffr.py").write_text(
        "def register(registry):\n    registry.register('site-ffr', lambda: 'pipeline object')\n")
    monkeypatch.chdir(tmp_path)
    config = parse_config({"node": {"plugins": ["plugins/site_ffr.py"]}})
    monkeypatch.chdir(REPO)  # the node may later run anywhere: the path is already absolute
    registry = default_registry(config.node.plugins)
    assert "site-ffr" in registry and registry.create("site-ffr") == "pipeline object"


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

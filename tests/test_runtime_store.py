"""ModelStore: checksum, shape and presence errors, provider fallback, hot reload, and the models CLI."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from export.onnx_export import export_onnx
from pipelines.base import PipelineResult
from pipelines.runtime import ModelError, ModelManifest, ModelStore, Provenance
from pipelines.runtime.providers import describe_build, provider_chain
from pipelines.runtime.settings import ModelsSection

PROV = Provenance(trained_on="synthetic phantoms", synthetic=True, date="2026-11-24", code_version="test",
                  metrics={}, notes="")
CPU = ModelsSection(providers=("cpu",), warmup=True)


class Scale(nn.Module):
    """y = conv(x) with weights set from ``value``: versions give distinguishable outputs."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def install(models_dir: Path, name: str = "seg", version: str = "1", value: float = 1.0) -> None:
    export_onnx(Scale(value), (torch.ones(1, 1, 8, 8),), models_dir, name=name, version=version, task="segmentation",
                input_names=["image"], output_names=["logits"],
                dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                preprocessing={"size": [8, 8]}, provenance=PROV, verbose=False)


@pytest.fixture()
def models_dir(tmp_path: Path) -> Path:
    d = tmp_path / "models"
    install(d)
    return d


X = np.ones((1, 1, 8, 8), np.float32)


def test_loads_by_manifest_and_runs(models_dir: Path) -> None:
    store = ModelStore([models_dir], CPU)
    h = store.acquire("seg")
    assert h.manifest.version == "1"
    assert float(h.run({"image": X})["logits"][0, 0, 4, 4]) == pytest.approx(9.0)
    assert store.acquire("seg").session is h.session  # one shared session per version
    row = store.describe()[0]
    assert row["status"] == "ok" and row["provider"] == "cpu" and "synthetic phantoms" in row["provenance"]


def test_tampered_file_is_refused_with_fix(models_dir: Path) -> None:
    onnx_path = models_dir / "seg" / "model.onnx"
    data = bytearray(onnx_path.read_bytes())
    data[-1] ^= 0xFF
    onnx_path.write_bytes(bytes(data))
    store = ModelStore([models_dir], CPU)
    with pytest.raises(ModelError) as exc:
        store.acquire("seg")
    msg = str(exc.value)
    assert "'seg'" in msg and "sha256 mismatch" in msg and str(onnx_path) in msg and "cardionode export" in msg
    assert store.describe()[0]["status"] == "error"


def test_missing_model_names_the_fix(models_dir: Path) -> None:
    store = ModelStore([models_dir], CPU)
    with pytest.raises(ModelError) as exc:
        store.acquire("calcium-unet")
    msg = str(exc.value)
    assert "'calcium-unet'" in msg and "not installed" in msg and "cardionode export" in msg and "seg" in msg


def test_missing_onnx_file_and_bad_manifest(models_dir: Path, tmp_path: Path) -> None:
    (models_dir / "seg" / "model.onnx").unlink()
    broken = models_dir / "other"
    broken.mkdir()
    (broken / "manifest.json").write_text('{"format_version": 1, "name": "other"}')
    store = ModelStore([models_dir], CPU)
    with pytest.raises(ModelError, match=r"model 'seg': .*model.onnx is missing"):
        store.acquire("seg")
    with pytest.raises(ModelError, match=r"model 'other': invalid manifest: "
                                         r".*other/manifest.json: key '\w+': missing \(required\)"):
        store.acquire("other")


def test_wrong_input_shape_and_dtype(models_dir: Path) -> None:
    h = ModelStore([models_dir], CPU).acquire("seg")
    with pytest.raises(ModelError, match=r"model 'seg': \(version 1\) input 'image' has shape \(1, 1, 16, 16\), "
                                         r"the model expects \(batch, 1, 8, 8\)"):
        h.run({"image": np.ones((1, 1, 16, 16), np.float32)})
    with pytest.raises(ModelError, match="dtype float64"):
        h.run({"image": np.ones((1, 1, 8, 8))})
    with pytest.raises(ModelError, match="missing: \\['image'\\]"):
        h.run({"img": X})


def test_manifest_that_does_not_match_the_file(models_dir: Path) -> None:
    """A manifest declaring another input shape than the ONNX file (mismatched model) is refused on load."""
    path = models_dir / "seg" / "manifest.json"
    data = json.loads(path.read_text())
    data["inputs"][0]["shape"] = ["batch", 1, 16, 16]
    del data["trt_profile"]  # (left in, the manifest's own profile check would already refuse it)
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match=r"input 'image' of .* is tensor\(float\) \['batch', 1, 8, 8\], "
                                         r"the manifest says float32 \['batch', 1, 16, 16\]"):
        ModelStore([models_dir], CPU).acquire("seg")


def test_configured_dir_overrides_bundled(tmp_path: Path) -> None:
    low, high = tmp_path / "bundled", tmp_path / "site"
    install(low, version="1", value=1.0)
    install(low, name="only-bundled", version="7")
    install(high, version="2", value=2.0)
    store = ModelStore([low, high], CPU)
    assert store.names() == ["only-bundled", "seg"]
    assert store.acquire("seg").info.version == "2"
    assert store.acquire("only-bundled").info.version == "7"


def test_providers_missing_from_the_build_are_said_once_not_per_model(models_dir: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """The CPU wheel has no TensorRT/CUDA: loading models logs no warning per model (there were two per
    model, 26 at start-up); describe_build() gives the one line the node logs instead."""
    install(models_dir, name="seg2")
    caplog.set_level(logging.DEBUG, logger="cardionode.models")
    settings = ModelsSection(providers=("tensorrt", "cuda", "cpu"), tensorrt_cache_dir=str(models_dir / "trt"))
    store = ModelStore([models_dir], settings)
    for name in ("seg", "seg2"):
        h = store.acquire(name)
        assert h.provider == "CPUExecutionProvider" and h.info.provider == "cpu"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    line = describe_build(settings.providers)
    assert "\n" not in line
    assert "providers in this build: " in line and "cpu" in line.split("providers in this build: ")[1]
    assert "models run on cpu" in line and "tensorrt, cuda not in this build" in line
    assert describe_build(("cuda", "cpu"), ["CUDAExecutionProvider", "CPUExecutionProvider"]).endswith(
        "models run on cuda (falling back to cpu)")


def test_provider_compiled_in_but_unusable_falls_back(models_dir: Path) -> None:
    """Pretend CUDA is available: ORT cannot start it here, the store must still end on CPU."""
    store = ModelStore([models_dir], ModelsSection(providers=("cuda", "cpu")),
                       available_providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    h = store.acquire("seg")
    assert h.provider == "CPUExecutionProvider"
    assert float(h.run({"image": X})["logits"][0, 0, 4, 4]) == pytest.approx(9.0)


def test_tensorrt_options_from_config_and_manifest(models_dir: Path) -> None:
    man = ModelManifest.load(models_dir / "seg")
    chain = provider_chain(("tensorrt", "cuda", "cpu"), man, tensorrt_fp16=True,
                           tensorrt_cache_dir=models_dir / "trt",
                           available=["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    assert [n for n, _ in chain] == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    trt = chain[0][1]
    assert trt["trt_fp16_enable"] is True and trt["trt_engine_cache_enable"] is True
    assert Path(trt["trt_engine_cache_path"]).is_dir() and man.sha256[:12] in trt["trt_engine_cache_path"]
    assert trt["trt_profile_min_shapes"] == "image:1x1x8x8"
    assert trt["trt_profile_opt_shapes"] == "image:1x1x8x8"


def _job(store: ModelStore, started: threading.Event, proceed: threading.Event, out: dict) -> None:
    """A pipeline job: acquire at the start, work a while, run, record the model in its result."""
    handle = store.acquire("seg")
    started.set()
    proceed.wait(10)
    value = float(handle.run({"image": X})["logits"][0, 0, 4, 4])
    out["result"] = PipelineResult(datasets=[], pipeline_name="test", pipeline_version="0", models=[handle.info],
                                   summary={"value": value})


def test_hot_reload_in_flight_job_keeps_v1_next_job_gets_v2(models_dir: Path) -> None:
    store = ModelStore([models_dir], CPU)
    started, proceed, out1 = threading.Event(), threading.Event(), {}
    job1 = threading.Thread(target=_job, args=(store, started, proceed, out1))
    job1.start()
    assert started.wait(10)
    install(models_dir, version="2", value=2.0)  # re-export while job 1 is running
    assert store.reload() == {"seg": ("1", "2")}
    proceed.set()
    job1.join(10)
    out2: dict = {}
    ev = threading.Event()
    ev.set()
    _job(store, threading.Event(), ev, out2)
    r1, r2 = out1["result"], out2["result"]
    assert (r1.models[0].version, r1.summary["value"]) == ("1", pytest.approx(9.0))
    assert (r2.models[0].version, r2.summary["value"]) == ("2", pytest.approx(18.0))
    assert store.reload() == {}  # nothing changed since


def test_reload_reports_added_removed_and_broken(models_dir: Path) -> None:
    store = ModelStore([models_dir], CPU)
    store.acquire("seg")
    install(models_dir, name="new", version="3")
    (models_dir / "seg" / "manifest.json").write_text("{not json")
    changes = store.reload()
    assert changes == {"new": (None, "3"), "seg": ("1", None)}
    with pytest.raises(ModelError, match="not valid JSON"):
        store.acquire("seg")
    assert store.acquire("new").info.version == "3"  # other models keep working


def test_concurrent_acquire_creates_one_session(models_dir: Path) -> None:
    store = ModelStore([models_dir], CPU)
    handles: list = []
    threads = [threading.Thread(target=lambda: handles.append(store.acquire("seg"))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(h.session) for h in handles}) == 1


def test_warmup_reports_each_model(models_dir: Path) -> None:
    (models_dir / "bad").mkdir()
    (models_dir / "bad" / "model.onnx").write_bytes(b"junk")
    result = ModelStore([models_dir], CPU).warmup()
    assert result["seg"].startswith("ok (cpu")
    assert "model 'bad'" in result["bad"] and "manifest not found" in result["bad"]


# --------------------------------------------------------------------------- CLI


def _config(tmp_path: Path, models_dir: Path) -> Path:
    cfg = tmp_path / "node.yaml"
    cfg.write_text(f"node: {{storage_dir: {tmp_path / 'var'}}}\nmodels: {{dir: {models_dir}, providers: [cpu]}}\n")
    return cfg


def _cli(*args: str) -> subprocess.CompletedProcess:
    code = "import sys, argparse\nfrom node.models_command import register\n" \
           "p = argparse.ArgumentParser(); register(p.add_subparsers(dest='c'))\n" \
           "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))\n"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])


def test_models_list_cli(models_dir: Path, tmp_path: Path) -> None:
    res = _cli("models", "list", "--json", "--config", str(_config(tmp_path, models_dir)))
    assert res.returncode == 0, res.stderr
    listing = json.loads(res.stdout)
    assert listing["onnxruntime"]["conflict"] is None and "CPUExecutionProvider" in listing["onnxruntime"]["providers"]
    rows = {row["name"]: row for row in listing["models"]}
    # the configured directory's model is listed beside the bundled ones
    assert rows["seg"]["version"] == "1" and rows["seg"]["provider"] == "cpu"
    assert {"calcium-unet2d", "myops-unet", "syntax-artery"} <= set(rows)
    res = _cli("models", "list", "--config", str(_config(tmp_path, models_dir)))
    assert "seg" in res.stdout and "synthetic phantoms" in res.stdout


def test_models_reload_cli_sends_sighup(models_dir: Path, tmp_path: Path) -> None:
    cfg = _config(tmp_path, models_dir)
    (tmp_path / "var").mkdir()
    marker = tmp_path / "got-hup"
    node = subprocess.Popen([sys.executable, "-c",
                             "import signal, time, pathlib, sys\n"
                             "signal.signal(signal.SIGHUP, "
                             f"lambda *a: pathlib.Path({str(marker)!r}).write_text('hup'))\n"
                             "print('ready', flush=True)\n"
                             "time.sleep(30)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert node.stdout is not None and node.stdout.readline().strip() == "ready"
        (tmp_path / "var" / "cardionode.pid").write_text(f"{node.pid}\n")
        res = _cli("models", "reload", "--config", str(cfg))
        assert res.returncode == 0, res.stderr
        assert f"sent SIGHUP to node process {node.pid}" in res.stdout and "seg 1" in res.stdout
        deadline = time.time() + 5
        while not marker.exists() and time.time() < deadline:
            time.sleep(0.05)
        assert marker.read_text() == "hup"
    finally:
        node.kill()
        node.wait()
    os.remove(tmp_path / "var" / "cardionode.pid")
    res = _cli("models", "reload", "--config", str(cfg))
    assert res.returncode == 2 and "no pid file" in res.stderr

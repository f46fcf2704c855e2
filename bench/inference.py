"""Torch eager (CPU) vs ONNX Runtime (CPU) on the same R3D-18 model and input, in one run.

    .venv/bin/python bench/inference.py [--frames 16] [--size 112] [--runs 5] [--threads 2]

Builds torchvision ``r3d_18(weights=None)`` (no download; random weights -
latency does not depend on them) with a 2-output head as in the SYNTAX
models, exports it with :func:`export.onnx_export.export_onnx` (which also
checks ORT against torch), loads it through :class:`ModelStore` like the node
does, then times both on one clip.  Prints median latency of each and the ratio.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torchvision.models.video import r3d_18  # noqa: E402

from export.onnx_export import export_onnx  # noqa: E402
from pipelines.runtime import ModelStore, Provenance  # noqa: E402
from pipelines.runtime.settings import ModelsSection  # noqa: E402


def _time(fn, runs: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads for both torch and ORT")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = r3d_18(weights=None)
    model.fc = torch.nn.Linear(512, 2)
    model.eval()
    x = torch.randn(args.batch, 3, args.frames, args.size, args.size)
    shape = tuple(x.shape)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        report = export_onnx(
            model, (x,), Path(tmp), name="bench-r3d18", version="bench", task="benchmark",
            input_names=["video"], output_names=["output"], provenance=Provenance(
                trained_on="untrained (random weights)", synthetic=True, date="2026-11-24",
                code_version="bench", metrics={}, notes="latency benchmark only"),
            verbose=False, atol=1e-3, rtol=1e-3,
        )
        export_s = time.perf_counter() - t0
        store = ModelStore([Path(tmp)], ModelsSection(providers=("cpu",), intra_op_threads=args.threads,
                                                      inter_op_threads=1))
        handle = store.acquire("bench-r3d18")
        feed = {"video": x.numpy()}

        with torch.inference_mode():
            torch_times = _time(lambda: model(x), args.runs)
            ref = model(x).numpy()
        ort_times = _time(lambda: handle.run(feed), args.runs)
        got = handle.run(feed)["output"]

    t_med, o_med = statistics.median(torch_times), statistics.median(ort_times)
    print(f"model: torchvision r3d_18 (weights=None, fc 512->2), input {shape} float32, "
          f"{args.threads} thread(s), {args.runs} timed runs after 2 warm-up runs")
    print(f"export + verify: {export_s:.1f} s; {report.comparison.summary()}")
    print(f"max |ORT - torch| on the timed input: {float(np.abs(got - ref).max()):.3e}")
    print(f"torch eager CPU : median {t_med * 1000:8.1f} ms  "
          f"(min {min(torch_times) * 1000:.1f}, max {max(torch_times) * 1000:.1f})")
    print(f"ORT CPU ({handle.info.provider})   : median {o_med * 1000:8.1f} ms  "
          f"(min {min(ort_times) * 1000:.1f}, max {max(ort_times) * 1000:.1f})")
    print(f"ratio torch/ORT : {t_med / o_med:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The shared training-run layer (training/runs) through the families' real commands on tiny data:
device and precision refusals, non-finite losses and weights never saved, the run folder policy,
config.yaml accepted back, resume after kill -9 equal to an uninterrupted run, quiet logs."""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from training.datasets.phantoms import write_coca_folder
from training.runs import DeviceError, NonFiniteError, PrecisionError, resolve_device, resolve_precision
from training.runs.checkpoint import check_finite
from training.runs.schedule import one_cycle

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
#: a tiny calcium run: 3 small CT phantoms, 32 px crops, batch 2
TINY = ["--batch", "2", "--crop", "32", "--epoch-steps", "4", "--val-fraction", "0.34", "--threads", "1"]


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=ENV)


def _console() -> str:
    exe = shutil.which("cardionode", path=str(Path(sys.executable).parent)) or shutil.which("cardionode")
    if exe is None:
        pytest.skip("cardionode console script not installed (pip install -e .)")
    return exe


@pytest.fixture(scope="module")
def coca(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coca-runs")
    write_coca_folder(root, {"1": "train", "2": "train", "3": "train", "4": "test"})
    return root


def _states_equal(a: Path, b: Path) -> bool:
    sa = torch.load(a, map_location="cpu", weights_only=False)["state_dict"]
    sb = torch.load(b, map_location="cpu", weights_only=False)["state_dict"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_missing_cuda_device_is_one_line(tmp_path, capsys) -> None:
    with pytest.raises(DeviceError, match="no CUDA device"):
        resolve_device("cuda:0")
    with pytest.raises(DeviceError, match="expected cpu, cuda or cuda:N"):
        resolve_device("gpu")
    # the card's --devices 0 through the SYNTAX trainer: one line, exit 2, no driver traceback, nothing written
    from training.syntax.train import main

    assert main(["backbone", "-r", str(tmp_path), "--devices", "0", "--logdir", str(tmp_path / "logs")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error: --device 0: no CUDA device available" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "logs" / "backbone_weights").exists()


def test_half_precision_refused_on_cpu(tmp_path, capsys) -> None:
    """bf16 autocast on CPU gave non-reproducible and NaN losses (issue 14): refused, as is fp16 without CUDA."""
    for name in ("bf16-mixed", "16-mixed"):
        with pytest.raises(PrecisionError, match="refused"):
            resolve_precision(name, torch.device("cpu"))
    assert resolve_precision("32", torch.device("cpu")).scaler() is None
    from training.syntax.train import main

    assert main(["backbone", "-r", str(tmp_path), "--precision", "bf16-mixed", "--logdir", str(tmp_path / "logs")]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "Traceback" not in err
    assert not (tmp_path / "logs" / "backbone_weights").exists()


def test_non_finite_weights_are_never_saved(tmp_path) -> None:
    state = torch.nn.Linear(2, 2).state_dict()
    check_finite(state, "ok")
    state["weight"][0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="1 of 2 tensors hold NaN/inf"):
        check_finite(state, "bad")


def test_nan_loss_stops_the_run_and_writes_no_checkpoint(tmp_path) -> None:
    """A NaN loss (here forced by a NaN loss weight) used to be trained through and its NaN weights saved
    as the published checkpoint (no best state existed); now it stops with one line naming where."""
    from training.syntax.phantom import make_study
    from training.syntax.phantom_dataset import write_release
    from training.syntax.train import TrainArgs, train_backbone

    root = tmp_path / "release"
    write_release(root, [make_study(300 + i, size=32, n_left=1, n_right=1, n_other=0) for i in range(4)], folds=2)
    args = TrainArgs(dataset_root=root, fold=0, batch_size=4, frames_per_clip=4, video_size=(32, 32), max_epochs=1,
                     logdir=tmp_path / "logs", seed=0, widths=(2, 4, 4, 8), progress=False, artery="left",
                     mse_scale=math.nan)
    with pytest.raises(NonFiniteError, match="loss is nan at backbone left fold 0 epoch 1 batch 1"):
        train_backbone(args)
    assert not (tmp_path / "logs" / "backbone_weights").exists()
    run = tmp_path / "logs" / "runs" / "backbone-left-fold0"
    assert not (run / "best.pt").exists() and not (run / "last.pt").exists()
    assert yaml.safe_load((run / "run.json").read_text())["status"] == "failed"


def test_short_schedules_do_not_divide_by_zero() -> None:
    for steps in (1, 2, 3, 4, 10, 11):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        sched = one_cycle(opt, 0.1, steps, pct_start=0.1)
        for _ in range(steps):
            opt.step()
            sched.step()
        assert math.isfinite(opt.param_groups[0]["lr"])


def test_run_folder_config_resume_and_quiet_logs(coca, tmp_path, capsys) -> None:
    """`cardionode calcium train` (console script, stderr not a terminal): per-epoch lines in train.log and
    on stderr, no progress-bar redraws; a second run into the same folder is refused; the saved config.yaml
    runs again; kill -9 after epoch 2 then --resume gives the same weights as the uninterrupted run."""
    exe = _console()
    out = tmp_path / "run"
    args = ["calcium", "train", "--coca", str(coca), "--out", str(out), "--steps", "12", *TINY]
    r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV)
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr and len(r.stderr) < 4000, r.stderr[-2000:]
    log = (out / "train.log").read_text()
    assert "epoch 1:" in log and "epoch 3:" in log and "val_loss" in log
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,train_loss") and len(rows) == 4
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    best = torch.load(out / "best.pt", map_location="cpu", weights_only=False)
    assert best["training_data"]["generated"] is True and best["config"]["steps"] == 12
    # never overwritten silently
    from training.calcium.train import main

    assert main(args[2:]) == 2
    err = capsys.readouterr().err
    assert "already holds a training run" in err and "--resume" in err
    # the saved configuration is accepted back (command-line options win)
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["steps"] == 12 and cfg["crop"] == 32 and "resume" not in cfg
    # kill -9 right after epoch 2 is on disk, then --resume from the config: same weights as uninterrupted
    killed = tmp_path / "killed"
    code = ("import os, signal, sys; from training.runs.run import TrainingRun; orig = TrainingRun.end_epoch\n"
            "def end_epoch(self, epoch, *a, **k):\n"
            "    r = orig(self, epoch, *a, **k)\n"
            "    if epoch == 2: os.kill(os.getpid(), signal.SIGKILL)\n"
            "    return r\n"
            "TrainingRun.end_epoch = end_epoch\n"
            "from training.calcium.train import main; sys.exit(main(sys.argv[1:]))")
    k = _cli("-c", code, "--config", str(out / "config.yaml"), "--out", str(killed))
    assert k.returncode == -9, k.stderr
    assert len((killed / "metrics.csv").read_text().splitlines()) == 3
    res = _cli("-m", "training.calcium.train", "--config", str(killed / "config.yaml"), "--out", str(killed),
               "--resume")
    assert res.returncode == 0, res.stderr
    assert len((killed / "metrics.csv").read_text().splitlines()) == 4
    assert _states_equal(out / "last.pt", killed / "last.pt") and _states_equal(out / "best.pt", killed / "best.pt")
    assert main(["--out", str(tmp_path / "none"), "--resume", "--coca", str(coca)]) == 2
    assert "nothing to resume" in capsys.readouterr().err

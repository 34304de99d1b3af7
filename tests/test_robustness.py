"""Overnight-run faults with real processes and real signals: Ctrl-C midway and resume,
a worker killed midway, a full disk, hostile and foreign checkpoints."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from conftest import SAMPLES
from runs import cli_command, env, journal, json_content, outputs, run, run_and_kill_a_worker, wait_for

RAY = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (.[cluster])")


# Locally, and with the workers on a local Ray cluster (whose processes get the Ctrl-C too).
@pytest.mark.parametrize("extra", [(), pytest.param(("--cluster", "local"), marks=RAY, id="ray")], ids=["local", "ray"])
def test_ctrl_c_midway_then_resume_gives_identical_outputs(folder, random_model_dir, baseline, tmp_path, extra):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        cli_command(random_model_dir, out, folder, workers=2 if extra else 1, extra=extra), env=env(),
        start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for(lambda: "done" in journal(out).values() or proc.poll() is not None)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole process group
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    statuses = journal(out)
    assert "interrupted" in statuses.values()
    assert not list(out.rglob("*.tmp")), "half-written files left behind"
    partial = outputs(out)
    expected = outputs(baseline)
    for name, data in partial.items():  # what exists is complete and correct
        assert data == expected[name]
    assert len(partial) < len(expected)

    again = run(cli_command(random_model_dir, out, folder, extra=extra))
    assert again.returncode == 0, again.stderr
    report = json.loads((out / "run-report.json").read_text())
    assert {f["status"] for f in report["files"]} <= {"done", "skipped"}
    assert sum(f["status"] == "skipped" for f in report["files"]) >= 1
    assert outputs(out) == expected
    assert json_content(out) == json_content(baseline)


def test_killed_worker_is_replaced_and_every_file_finishes(folder, random_model_dir, baseline, tmp_path):
    out = tmp_path / "out"

    def busy_pool_process(process: psutil.Process) -> bool:
        """A recognition worker at work: forked by the fork server (workerstart.py), so it and
        its parent carry the server's command line (the front end's VAD processes are spawned)."""
        parent = process.parent()
        forked = parent is not None and all("forkserver" in " ".join(p.cmdline()) for p in (process, parent))
        return forked and process.cpu_times().user > 1.0

    returncode, stderr = run_and_kill_a_worker(cli_command(random_model_dir, out, folder, workers=2), busy_pool_process)
    assert returncode == 0, stderr
    assert outputs(out) == outputs(baseline)
    assert json_content(out) == json_content(baseline)


def test_full_disk_fails_that_file_cleanly(random_model_dir, tmp_path):
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        # The first file's outputs fit; the English one's JSON (many tokens) does not. The random
        # model loops: without --no-guard the guard cuts its loops and the JSON would fit.
        command = cli_command(
            random_model_dir, mount, SAMPLES / "aishell_zh.mkv", SAMPLES / "two_cities.mp4", extra=("--no-guard",)
        )
        result = run(command)
        assert result.returncode == 1
        assert "two_cities.mp4" in result.stderr and "No space left on device" in result.stderr
        assert not list(mount.rglob("*.tmp")), "a temporary file was left on the full disk"
        for path in mount.glob("*.srt"):  # whatever was written is complete
            assert path.read_text().endswith("\n\n") or path.stat().st_size == 0
    finally:
        subprocess.run(["umount", str(mount)], check=False)


class _Hostile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _model_copy(random_model_dir: Path, target: Path) -> Path:
    shutil.copytree(random_model_dir, target)
    return target


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_hostile_checkpoint_is_refused_without_running_it(random_model_dir, tmp_path, writer):
    import torch

    model = _model_copy(random_model_dir, tmp_path / "hostile")
    marker = tmp_path / "pwned"
    payload = {"args": _Hostile(marker), "model_state_dict": {}}
    if writer == "torch.save":
        torch.save(payload, model / "model.pth.tar")
    else:
        with open(model / "model.pth.tar", "wb") as f:
            pickle.dump(payload, f)
    result = run(cli_command(model, tmp_path / "out", SAMPLES / "aishell_zh.mkv"))
    assert result.returncode == 2
    assert "refused" in result.stderr and "weights_only" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    if writer == "torch.save":
        assert "posix.system" in result.stderr
    assert not marker.exists()


def test_foreign_checkpoint_is_refused(random_model_dir, tmp_path):
    import torch

    model = _model_copy(random_model_dir, tmp_path / "foreign")
    torch.save({"weights": torch.zeros(3)}, model / "model.pth.tar")
    result = run(cli_command(model, tmp_path / "out", SAMPLES / "aishell_zh.mkv"))
    assert result.returncode == 2 and "not a FireRedASR checkpoint" in result.stderr


@pytest.mark.parametrize("signals", [("SIGTERM",), ("SIGINT", "SIGINT")], ids=["sigterm", "double-ctrl-c"])
def test_stop_signals_leave_only_complete_outputs(folder, random_model_dir, baseline, tmp_path, signals):
    out = tmp_path / "out"
    log_file = tmp_path / "run.log"
    cmd = cli_command(random_model_dir, out, folder)
    cmd[2:2] = ["--log-file", str(log_file)]
    proc = subprocess.Popen(
        cmd, env=env(), start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for(lambda: "done" in journal(out).values() or proc.poll() is not None)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    workers = psutil.Process(proc.pid).children(recursive=True)
    for name in signals:
        # SIGTERM goes to the CLI alone (a service manager); Ctrl-C to the whole group.
        if name == "SIGTERM":
            os.kill(proc.pid, signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(0.2)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert not list(out.rglob("*.tmp"))
    expected = outputs(baseline)
    for name, data in outputs(out).items():
        assert data == expected[name]
    statuses = journal(out)
    assert "done" in statuses.values() and "interrupted" in statuses.values()
    assert "done" in log_file.read_text()  # the unattended-run log names each finished file
    time.sleep(0.5)
    assert workers and not [p for p in workers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

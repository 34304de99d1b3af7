"""Overnight-run faults with real processes and real signals: Ctrl-C midway and resume,
a worker killed midway, a full disk, hostile and foreign checkpoints."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import ROOT, SAMPLES

FORMATS = "srt,vtt,txt,json"


def cli_command(model_dir: Path, out: Path, *inputs: Path, workers: int = 1) -> list[str]:
    # Small batches: many of them, so a run can be interrupted with work still queued.
    return [
        sys.executable, str(ROOT / "long_video_transcribe.py"), "--model-dir", str(model_dir),
        "--workers", str(workers), "--threads-per-worker", "1", "--batch-seconds", "10",
        "--formats", FORMATS, "--no-progress", "-o", str(out), *map(str, inputs),
    ]  # fmt: skip


def env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=600)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("folder")
    for i in range(3):
        shutil.copy(SAMPLES / "aishell_zh.mkv", folder / f"zh {i}.mkv")
        shutil.copy(SAMPLES / "two_cities.mp4", folder / f"en {i}.mp4")
    return folder


@pytest.fixture(scope="module")
def baseline(folder: Path, random_model_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("baseline")
    result = run(cli_command(random_model_dir, out, folder))
    assert result.returncode == 0, result.stderr
    return out


def outputs(out: Path) -> dict[str, bytes]:
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.suffix in (".srt", ".vtt", ".txt")
    }


def json_content(out: Path) -> dict[str, object]:
    # Timings differ run to run; everything else must be identical.
    found = {}
    for path in sorted(out.rglob("*.json")):
        if path.name.startswith(".") or path.name == "run-report.json":
            continue
        data = json.loads(path.read_text())
        found[path.name] = (data["segments"], data["cues"], data["duration"])
    return found


def journal(out: Path) -> dict[str, str]:
    path = out / ".fireredasr-fast-journal.json"
    if not path.is_file():
        return {}
    try:
        return {r["relative"]: r["status"] for r in json.loads(path.read_text())["files"]}
    except ValueError:
        return {}


def wait_for(condition, timeout: float = 300.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def test_ctrl_c_midway_then_resume_gives_identical_outputs(folder, random_model_dir, baseline, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        cli_command(random_model_dir, out, folder), env=env(), start_new_session=True,
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

    again = run(cli_command(random_model_dir, out, folder))
    assert again.returncode == 0, again.stderr
    report = json.loads((out / "run-report.json").read_text())
    assert {f["status"] for f in report["files"]} <= {"done", "skipped"}
    assert sum(f["status"] == "skipped" for f in report["files"]) >= 1
    assert outputs(out) == expected
    assert json_content(out) == json_content(baseline)


def test_killed_worker_is_replaced_and_every_file_finishes(folder, random_model_dir, baseline, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        cli_command(random_model_dir, out, folder, workers=2), env=env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    parent = psutil.Process(proc.pid)

    def busy_worker():
        for child in parent.children(recursive=True):
            try:
                if "spawn_main" in " ".join(child.cmdline()) and child.cpu_times().user > 1.0:
                    return child
            except psutil.Error:
                continue
        return None

    wait_for(lambda: busy_worker() is not None or proc.poll() is not None)
    victim = busy_worker()
    assert victim is not None, "the run finished before a worker could be killed"
    victim.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    assert outputs(out) == outputs(baseline)
    assert json_content(out) == json_content(baseline)


def test_full_disk_fails_that_file_cleanly(random_model_dir, tmp_path):
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        # The first file's outputs fit; the English one's JSON (many tokens) does not.
        result = run(cli_command(random_model_dir, mount, SAMPLES / "aishell_zh.mkv", SAMPLES / "two_cities.mp4"))
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

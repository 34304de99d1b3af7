"""The same run on a real local Ray cluster started by the CLI (`--cluster local`): outputs
equal a local run byte for byte, a rerun resumes from the journal, and an actor killed
midway still lets every file finish. Plus the slot plan and the errors without Ray."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
from pathlib import Path

import psutil
import pytest
from conftest import ROOT, SAMPLES
from runs import cli_command, env, journal, json_content, outputs, run, run_and_kill_a_worker, wait_for

from fireredasr_fast.runner.cluster import Node, plan_slots

GB = 1e9
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (.[cluster])")


def test_slots_follow_each_node_and_its_gpus():
    nodes = [
        Node("a", "10.0.0.1", cpus=32, gpus=2, memory_bytes=100 * GB),
        Node("b", "10.0.0.2", cpus=4, gpus=0, memory_bytes=100 * GB),
        Node("c", "10.0.0.3", cpus=8, gpus=0, memory_bytes=4 * GB),  # memory-bound
    ]
    slots = plan_slots(nodes, model_size_bytes=int(4.7 * GB))
    by_node = {n.node_id: [s for s in slots if s.node_id == n.node_id] for n in nodes}
    assert [s.device for s in by_node["a"]].count("cuda") == 2
    cpu_a = [s for s in by_node["a"] if s.device == "cpu"]
    assert len(cpu_a) * cpu_a[0].threads == 32  # every core of the node, one thread each
    # A large model on a 4-core node: one worker with every core, as the local plan does.
    assert [(s.device, s.threads) for s in by_node["b"]] == [("cpu", 4)]
    assert len(by_node["c"]) < 8  # memory limits the workers, as the local plan does

    explicit = plan_slots(nodes, int(4.7 * GB), workers=2, threads_per_worker=3)
    assert all(s.threads == 3 for s in explicit if s.device == "cpu")
    assert sum(s.device == "cpu" for s in explicit) == 2 * len(nodes)
    assert all(s.device == "cpu" for s in plan_slots(nodes, 0, gpu_mode="off"))
    assert [s.device for s in plan_slots(nodes, 0, gpu_mode="only")] == ["cuda", "cuda"]


def test_without_ray_the_flag_says_how_to_install_it(random_model_dir, tmp_path):
    shadow = tmp_path / "no-ray" / "ray"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    cmd = cli_command(random_model_dir, tmp_path / "out", SAMPLES / "aishell_zh.mkv", extra=("--cluster", "local"))
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300,
        env={**env(), "PYTHONPATH": f"{shadow.parent}:{env()['PYTHONPATH']}"},
    )  # fmt: skip
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "pip install" in errors[0] and "[cluster]" in errors[0]


def test_an_unreachable_cluster_is_one_line(random_model_dir, tmp_path):
    media = SAMPLES / "aishell_zh.mkv"
    proc = run(cli_command(random_model_dir, tmp_path / "out", media, extra=("--cluster", "127.0.0.1:1")))
    assert proc.returncode == 2
    assert "error: cannot reach the Ray cluster at 127.0.0.1:1" in proc.stderr
    assert not (tmp_path / "out" / "aishell_zh.srt").exists()


def cluster_command(model_dir: Path, out: Path, folder: Path, *extra: str) -> list[str]:
    return cli_command(model_dir, out, folder, workers=2, extra=("--cluster", "local", *extra))


@needs_ray
def test_cluster_run_equals_local_run_and_resumes(folder, random_model_dir, baseline, tmp_path):
    out = tmp_path / "out"
    cache = tmp_path / "cache"
    first = run(cluster_command(random_model_dir, out, folder, "--ship-model"), FIREREDASR_FAST_CACHE=str(cache))
    assert first.returncode == 0, first.stderr
    # The actors loaded the copy shipped through the object store, unpacked once on the node.
    (shipped,) = (cache / "models").iterdir()
    assert (shipped / "model.pth.tar").read_bytes() == (random_model_dir / "model.pth.tar").read_bytes()
    assert "cluster plan: 2 worker(s) on 1 node(s)" in first.stderr
    assert outputs(out) == outputs(baseline)  # srt, vtt, txt byte for byte
    assert json_content(out) == json_content(baseline)
    report = json.loads((out / "run-report.json").read_text())
    assert report["summary"]["workers"]["batches"]["ray-cpu"] > 0
    assert set(journal(out).values()) == {"done"}

    again = run(cluster_command(random_model_dir, out, folder))
    assert again.returncode == 0, again.stderr
    report = json.loads((out / "run-report.json").read_text())
    assert {f["status"] for f in report["files"]} == {"skipped"}


@needs_ray
def test_an_actor_killed_midway_still_finishes_every_file(folder, random_model_dir, baseline, tmp_path):
    out = tmp_path / "out"

    def actor_holding_a_batch(process: psutil.Process) -> bool:
        # `--cluster local` starts Ray under the CLI, so its actors are the CLI's descendants;
        # Ray titles an actor's process after the method it runs: this one holds a batch.
        return "SlotWorker.call" in " ".join(process.cmdline())

    returncode, stderr = run_and_kill_a_worker(cluster_command(random_model_dir, out, folder), actor_holding_a_batch)
    assert returncode == 0, stderr
    assert outputs(out) == outputs(baseline)
    assert json_content(out) == json_content(baseline)
    report = json.loads((out / "run-report.json").read_text())
    assert report["summary"]["workers"]["batches_retried"] >= 1
    assert not list(out.rglob("*.tmp"))


@needs_ray
def test_a_node_lost_midway_hands_its_work_to_the_others(folder, random_model_dir, baseline, tmp_path):
    from ray.cluster_utils import Cluster

    # Two real nodes (two raylets) on this machine; the CLI joins them as a client would.
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        node = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
        out = tmp_path / "out"
        cmd = cli_command(random_model_dir, out, folder, workers=1, extra=("--cluster", cluster.address))
        proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def busy_on_that_node() -> bool:
            children = raylet.children(recursive=True)
            return any("SlotWorker.call" in " ".join(child.cmdline()) for child in children)

        wait_for(lambda: busy_on_that_node() or proc.poll() is not None)
        assert proc.poll() is None, "the run finished before the node could be removed"
        cluster.remove_node(node)  # its raylet and every worker process on it die
        _, stderr = proc.communicate(timeout=600)
    finally:
        cluster.shutdown()
    assert proc.returncode == 0, stderr
    assert "2 worker(s) on 2 node(s)" in stderr
    assert outputs(out) == outputs(baseline)
    assert json_content(out) == json_content(baseline)
    report = json.loads((out / "run-report.json").read_text())
    assert report["summary"]["workers"]["batches_retried"] >= 1


@needs_ray
def test_a_remote_driver_joins_through_the_ray_client(random_model_dir, baseline, folder, tmp_path, monkeypatch):
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the nodes import this checkout, as an install would

    with socket.socket() as probe:  # a free port for the head's Ray client server
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    head = {"num_cpus": 2, "include_dashboard": False, "ray_client_server_port": port}
    cluster = Cluster(initialize_head=True, connect=False, head_node_args=head)
    try:
        out = tmp_path / "out"
        extra = ("--cluster", f"ray://127.0.0.1:{port}", "--ship-model")
        # The head starts a server process per client; on a loaded machine that can outlast the
        # Ray client's first 5 s connection attempt.
        cmd = cli_command(random_model_dir, out, folder, workers=2, extra=extra)
        result = run(cmd, RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S="30")
    finally:
        cluster.shutdown()
    assert result.returncode == 0, result.stderr
    assert outputs(out) == outputs(baseline)
    assert json_content(out) == json_content(baseline)

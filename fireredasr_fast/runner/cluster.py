"""The same run on a Ray cluster: only the workers move.

The driver (the process the user started) still decodes and segments every file, cuts
the batches, writes every output atomically and keeps the journal, exactly as a local run
does (runner.py). What changes is who recognises the batches: one Ray actor per worker
slot on every node, sized per node the way the local plan sizes one machine, plus one GPU
actor per GPU. `RayExecutor` makes a set of actors look like a concurrent.futures executor,
so the runner's scheduling, retries and journal are the ones already tested locally.

Faults: actors restart (bounded) when their process or node dies; the batch they held
comes back to the runner as WorkerLost and runs again elsewhere. A batch's result is only
ever written by the driver, once, so nothing is lost or written twice, and a rerun resumes
from the journal like a local one.

The model reaches the nodes either by path (shared storage: every node reads the same
directory) or, with `ship_model`, once per node through Ray's object store into a local
cache directory; never once per batch.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fireredasr_fast.engines import EngineSpec
from fireredasr_fast.errors import FireRedFastError
from fireredasr_fast.fsutil import cache_dir, directory_identity, directory_made_once

from .gpu import GpuPolicy, is_cuda_oom
from .plan import Plan, make_plan
from .worker import WorkerLost, describe_error, load_engine
from .workers import WorkerGroup

log = logging.getLogger("fireredasr_fast")

INSTALL_HINT = "pip install 'fireredasr-fast[cluster]' (or: pip install ray)"
# Restarts of one actor (process or node death) before its slot is given up.
MAX_ACTOR_RESTARTS = 3
# How long a slot whose actor is restarting (process killed, engine loading again) may take
# before its batches stop waiting for it; a restart that takes longer still rejoins after.
RESTART_WAIT_SECONDS = 120.0


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise FireRedFastError(f"--cluster needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


# ---------------------------------------------------------------- connecting, planning


def connect(address: str, local_cpus: int | None = None) -> bool:
    """Join the cluster at `address`: "ray://HOST:PORT" (Ray client), "HOST:PORT" or "auto"
    (a cluster this machine belongs to), or "local" (start a private one on this machine).
    Returns True when this call started or joined Ray (so the caller should disconnect)."""
    has_token = bool(os.environ.get("RAY_AUTH_TOKEN")) or _token_file().is_file()
    if address.startswith("ray://") and "RAY_AUTH_MODE" not in os.environ and has_token:
        # Plain ray.init picks up this machine's cluster token by itself; the Ray client only
        # sends it when told that token auth is on, which Ray reads when it is imported.
        os.environ["RAY_AUTH_MODE"] = "token"
    ray = _ray()
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    _check_reachable(address)
    # The head starts a server process per Ray client, and that start fails now and then
    # ("Starting Ray client server failed": a third of the joins in this repo's tests);
    # a second try gets a fresh one.
    attempts = 3 if address.startswith("ray://") else 1
    for attempt in range(1, attempts + 1):
        try:
            if address == "local":
                import psutil

                cpus = local_cpus or psutil.cpu_count(logical=False) or os.cpu_count() or 1
                ray.init(num_cpus=cpus, include_dashboard=False, **kwargs)
            else:
                ray.init(address=address, **kwargs)
            return True
        except Exception as exc:  # ConnectionError, RuntimeError, ValueError, grpc errors...
            if attempt == attempts:
                raise FireRedFastError(f"cannot join the Ray cluster at {address}: {describe_error(exc)}") from None
            log.warning("joining the Ray cluster at %s failed (%s); trying again", address, describe_error(exc))
            with contextlib.suppress(Exception):
                ray.shutdown()
    return True


def _token_file() -> Path:
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


def _check_reachable(address: str) -> None:
    """A head that is down makes ray.init retry for minutes; a plain TCP probe fails in seconds."""
    if address in ("local", "auto"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise FireRedFastError(f"--cluster {address}: expected ray://HOST:PORT, HOST:PORT, auto or local")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise FireRedFastError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def disconnect() -> None:
    ray = _ray()
    if ray.is_initialized():
        ray.shutdown()


@dataclass(frozen=True)
class Node:
    node_id: str
    address: str
    cpus: int
    gpus: int
    memory_bytes: float


@dataclass(frozen=True)
class Slot:
    """One actor to start: where, on what device, with how many threads."""

    node_id: str
    address: str
    device: str  # "cpu" or "cuda"
    threads: int


def cluster_nodes() -> list[Node]:
    """The live nodes and the resources they offer to Ray."""
    nodes = []
    for entry in _ray().nodes():
        if not entry.get("Alive"):
            continue
        resources = entry.get("Resources", {})
        nodes.append(
            Node(
                node_id=entry["NodeID"],
                address=entry.get("NodeManagerAddress", "?"),
                cpus=int(resources.get("CPU", 0)),
                gpus=int(resources.get("GPU", 0)),
                memory_bytes=float(resources.get("memory", 0)),
            )
        )
    return nodes


def plan_slots(
    nodes: Sequence[Node],
    model_size_bytes: int,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    gpu_mode: str = "auto",
    weights_shared: bool = True,
) -> list[Slot]:
    """Worker slots per node: CPU workers as the local plan sizes a machine with that node's
    CPUs and memory (`workers` / `threads_per_worker` apply per node), and one GPU worker
    per GPU unless `gpu_mode` is "off" ("only": GPU workers alone).

    A node's CPU count is what it offers Ray (`ray start --num-cpus`), taken as its cores."""
    slots: list[Slot] = []
    for node in nodes:
        if gpu_mode != "off":
            slots += [Slot(node.node_id, node.address, "cuda", 1) for _ in range(node.gpus)]
        if gpu_mode == "only" or node.cpus < 1:
            continue
        plan = make_plan(
            model_size_bytes,
            workers,
            threads_per_worker,
            physical_cores=node.cpus,
            logical_cores=node.cpus,
            available_bytes=node.memory_bytes or None,
            weights_shared=weights_shared,
        )
        # An explicit --threads-per-worker larger than a small node still fits on it.
        threads = min(plan.threads_per_worker, node.cpus)
        slots += [Slot(node.node_id, node.address, "cpu", threads) for _ in range(plan.workers)]
    return slots


def describe_slots(slots: Sequence[Slot]) -> str:
    by_node: dict[str, list[Slot]] = {}
    for slot in slots:
        by_node.setdefault(slot.node_id, []).append(slot)
    parts = []
    for node_slots in by_node.values():
        cpu = [s for s in node_slots if s.device == "cpu"]
        gpu = len(node_slots) - len(cpu)
        where = node_slots[0].address
        text = f"{where}: {len(cpu)} x {cpu[0].threads} thread(s)" if cpu else f"{where}: no CPU workers"
        parts.append(text + (f" + {gpu} GPU worker(s)" if gpu else ""))
    return f"cluster plan: {len(slots)} worker(s) on {len(by_node)} node(s) ({'; '.join(parts)})"


# ---------------------------------------------------------------- shipping the model


def ship_model(model_dir: str | os.PathLike) -> tuple[Any, str]:
    """Put the model directory's files in Ray's object store once. Returns (ref, digest);
    each node fetches the object once and unpacks it into a local cache directory."""
    import numpy as np

    files = sorted(p for p in Path(model_dir).iterdir() if p.is_file())
    identity = "\n".join(f"{name} {size} {mtime}" for name, (size, mtime) in directory_identity(model_dir).items())
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    # uint8 arrays, not bytes: the object store hands them to actors without a copy.
    payload = {p.name: np.fromfile(p, dtype=np.uint8) for p in files}
    return _ray().put(payload), digest


def unpack_model(ref_box: list[Any], digest: str) -> str:
    """On a node: the shipped model as a local directory, written once per node (atomically:
    a temporary directory renamed into place, so a crash never leaves half a model)."""
    target = cache_dir("models") / digest
    if not target.is_dir():  # fetch only when this node has no copy yet

        def fill(staging: Path) -> None:
            for name, data in _ray().get(ref_box[0]).items():
                data.tofile(staging / name)

        directory_made_once(target, fill)
    return str(target)


# ---------------------------------------------------------------- the actors


class WorkerDeclined(RuntimeError):
    """A GPU actor found too little free GPU memory to load the model: the batch goes back."""


class SlotWorker:
    """The body of one Ray actor: a worker process (worker.py) for one slot."""

    def __init__(self, spec: EngineSpec, threads: int, model_box: list[Any] | None, min_free_bytes: float) -> None:
        self.declined = ""
        if spec.device.startswith("cuda"):
            self.declined = _gpu_shortfall(min_free_bytes)
            if self.declined:
                return
        if model_box is not None:
            spec = dataclasses.replace(spec, model_dir=unpack_model(model_box[0], model_box[1]))
        load_engine(spec, threads)

    def call(self, fn: Any, *args: Any) -> Any:
        if self.declined:
            raise WorkerDeclined(self.declined)
        return fn(*args)

    def pid(self) -> int:
        return os.getpid()


def _gpu_shortfall(min_free_bytes: float) -> str:
    import torch

    if not torch.cuda.is_available():
        return "CUDA is not available on this node"
    free, _total = torch.cuda.mem_get_info()
    if free < min_free_bytes:
        return f"only {free / 2**30:.1f} GiB free on the GPU, {min_free_bytes / 2**30:.1f} GiB needed"
    return ""


class RayExecutor(cf.Executor):
    """A set of actors behind the executor interface the runner drives.

    Each submit goes to the live actor with the fewest batches in flight. A batch whose actor
    died (process, node) fails with WorkerLost: the runner runs it again; the actor restarts
    by itself up to MAX_ACTOR_RESTARTS times, after which its slot is given up."""

    def __init__(
        self,
        slots: Sequence[Slot],
        spec_for: Any,  # Callable[[Slot], EngineSpec]
        model: tuple[Any, str] | None = None,
        min_gpu_free_bytes: float = 0.0,
    ) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ray = _ray()
        remote_cls = ray.remote(SlotWorker)
        # The ref travels inside a list so Ray passes the reference, not the model itself:
        # an actor fetches the files only when its node has no unpacked copy yet.
        model_box = [[model[0]], model[1]] if model else None
        self._lock = threading.Condition()
        self._actors: list[Any] = []
        self._in_flight: list[int] = []
        self._dead: set[int] = set()
        # Slots whose actor is restarting: Ray refuses their calls until it is back
        # (ActorUnavailableError), so no batch goes there until a ping answers.
        self._restarting: set[int] = set()
        for slot in slots:
            options: dict[str, Any] = {
                "num_cpus": 0 if slot.device == "cuda" else slot.threads,
                "num_gpus": 1 if slot.device == "cuda" else 0,
                "max_restarts": MAX_ACTOR_RESTARTS,
                "max_task_retries": 0,  # the runner retries batches, with its own bound
                # A slot belongs to its node: a crashed actor restarts there; when the node
                # itself is gone the actor dies for good and its batches go to other slots.
                "scheduling_strategy": NodeAffinitySchedulingStrategy(slot.node_id, soft=False),
            }
            actor = remote_cls.options(**options).remote(spec_for(slot), slot.threads, model_box, min_gpu_free_bytes)
            self._actors.append(actor)
            self._in_flight.append(0)

    def live_slots(self) -> int:
        with self._lock:
            return len(self._actors) - len(self._dead)

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> cf.Future:
        result: cf.Future = cf.Future()
        with self._lock:
            # While every live slot is restarting, wait for one (bounded) rather than send it
            # a batch Ray would refuse at once.
            self._lock.wait_for(lambda: not self._restarting or self._ready_slots(), RESTART_WAIT_SECONDS)
            live = self._ready_slots() or [i for i in range(len(self._actors)) if i not in self._dead]
            if not live:  # the last slot retired since the runner looked: hand the batch back
                result.set_exception(WorkerLost("no Ray worker left in this pool", counts_as_attempt=False))
                return result
            index = min(live, key=lambda i: self._in_flight[i])
            self._in_flight[index] += 1
        remote = self._actors[index].call.remote(fn, *args, **kwargs).future()
        remote.add_done_callback(lambda done: self._settle(index, done, result))
        return result

    def _settle(self, index: int, done: cf.Future, result: cf.Future) -> None:
        ray = _ray()
        with self._lock:
            self._in_flight[index] -= 1
        try:
            result.set_result(done.result())
            return
        except (ray.exceptions.ActorDiedError, ray.exceptions.ActorUnschedulableError) as exc:
            # Restarts used up, or its node is gone: this slot is finished.
            with self._lock:
                self._dead.add(index)
            log.warning("a Ray worker slot is given up: %s", describe_error(exc))
            error: BaseException = WorkerLost(f"a Ray worker died: {describe_error(exc)}")
        except ray.exceptions.RayActorError as exc:  # died mid-batch, or restarting
            self._await_restart(index)
            # A call refused while the actor restarts never ran: it does not count.
            started = not isinstance(exc, ray.exceptions.ActorUnavailableError)
            error = WorkerLost(f"a Ray worker was lost: {describe_error(exc)}", counts_as_attempt=started)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if exc.cause is not None else exc
            if isinstance(cause, WorkerDeclined) or _is_cuda_oom(cause):
                # GPUs are opportunistic here too: a GPU that has no room retires its slot.
                with self._lock:
                    self._dead.add(index)
                ray.kill(self._actors[index], no_restart=True)
                error = WorkerLost(f"GPU worker stood down: {describe_error(cause)}", counts_as_attempt=False)
            else:
                error = cause
        except BaseException as exc:
            error = exc
        result.set_exception(error)

    def _ready_slots(self) -> list[int]:
        """Slots neither given up nor restarting (call with the lock held)."""
        return [i for i in range(len(self._actors)) if i not in self._dead and i not in self._restarting]

    def _await_restart(self, index: int) -> None:
        """Keep batches off slot `index` until its restarted actor answers a ping."""
        with self._lock:
            if index in self._restarting or index in self._dead:
                return
            self._restarting.add(index)
        threading.Thread(target=self._wait_for_restart, args=(index,), name="ray-restart", daemon=True).start()

    def _wait_for_restart(self, index: int) -> None:
        ray = _ray()
        deadline = time.monotonic() + RESTART_WAIT_SECONDS
        while time.monotonic() < deadline and index < len(self._actors):  # emptied by shutdown
            try:
                ray.get(self._actors[index].pid.remote(), timeout=10)
                break
            except ray.exceptions.ActorDiedError:
                with self._lock:
                    self._dead.add(index)
                break
            except Exception:  # still restarting (unavailable, or the ping timed out)
                time.sleep(0.2)
        with self._lock:
            self._restarting.discard(index)
            self._lock.notify_all()

    def busy_actors(self) -> list[Any]:
        """Handles of the actors that have batches in flight (for tests and diagnostics)."""
        with self._lock:
            return [actor for actor, count in zip(self._actors, self._in_flight, strict=True) if count > 0]

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        ray = _ray()
        for actor in self._actors:
            with contextlib.suppress(Exception):  # already gone, or the cluster went away first
                ray.kill(actor, no_restart=True)
        self._actors = []


def _is_cuda_oom(exc: BaseException) -> bool:

    return is_cuda_oom(exc)


# ---------------------------------------------------------------- wiring for the runner


class RayWorkers(WorkerGroup):
    """A cluster's slots of one device as a worker group: one RayExecutor's actors. Ray
    restarts them itself (WorkerLost), so a batch past its deadline kills nothing."""

    killable = False

    def __init__(
        self, name: str, slots: Sequence[Slot], spec_for: Any, model: tuple[Any, str] | None, min_gpu_free: float
    ) -> None:
        super().__init__(name, len(slots), takes_largest=slots[0].device == "cuda")
        self.cluster_slots = list(slots)
        self.spec_for = spec_for
        self.model = model
        self.min_gpu_free = min_gpu_free

    def _new_executor(self) -> cf.Executor:
        return RayExecutor(self.cluster_slots, self.spec_for, self.model, self.min_gpu_free)

    def describe(self) -> str:
        nodes = len({slot.node_id for slot in self.cluster_slots})
        return f"{self.name}: {self.slots} Ray actor(s) on {nodes} node(s)"


@dataclass
class ClusterSetup:
    groups: list[WorkerGroup]
    plan: Plan  # the whole cluster's CPU workers, for the runner's batching and the report
    slots: list[Slot]
    description: str


def cluster_setup(
    spec: EngineSpec,
    gpu_spec: EngineSpec,
    model_size_bytes: int,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    gpu_mode: str = "auto",
    ship: bool = False,
    min_gpu_free_bytes: float | None = None,
    weights_shared: bool = True,
) -> ClusterSetup:
    """Plan the slots of the connected cluster and build the runner's worker groups."""
    nodes = cluster_nodes()
    slots = plan_slots(nodes, model_size_bytes, workers, threads_per_worker, gpu_mode, weights_shared)
    if not slots:
        raise FireRedFastError("the Ray cluster offers no CPU or GPU to run workers on")
    model = ship_model(spec.model_dir) if ship and spec.model_dir else None
    if min_gpu_free_bytes is None:
        # The local policy's default: the model, its working memory, and a margin.
        min_gpu_free_bytes = GpuPolicy(model_bytes=model_size_bytes).need_bytes

    def spec_for(slot: Slot) -> EngineSpec:
        return dataclasses.replace(gpu_spec, device="cuda") if slot.device == "cuda" else spec

    groups: list[WorkerGroup] = []
    for name, device in (("ray-gpu", "cuda"), ("ray-cpu", "cpu")):
        chosen = [slot for slot in slots if slot.device == device]
        if chosen:
            groups.append(RayWorkers(name, chosen, spec_for, model, min_gpu_free_bytes))
    cpu_slots = [slot for slot in slots if slot.device == "cpu"]
    cpus = sum(node.cpus for node in nodes)
    plan = Plan(
        workers=len(cpu_slots),
        threads_per_worker=max((slot.threads for slot in cpu_slots), default=1),
        physical_cores=cpus,
        logical_cores=cpus,
        available_gb=sum(node.memory_bytes for node in nodes) / 1e9,
        model_gb=model_size_bytes / 1e9,
        reason=f"ray cluster, {len(nodes)} node(s), model {'shipped' if model else 'read by path'}",
    )
    return ClusterSetup(groups, plan, slots, describe_slots(slots))

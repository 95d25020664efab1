"""Multi-GPU sessions: this process is rank 0, worker processes are the other ranks.

A session starts workers (scripts/mova_worker.py: local ones started here, remote ones by hand on
other machines with the same rendezvous), joins them in a torch.distributed process group (NCCL on
GPUs, gloo on CPU; a gloo group carries the per-step interrupt flag) and a TCPStore that carries
commands: "load" (each rank loads the model through runtime/loading.py onto its own device) and
"sample" (every rank runs models/sampling/generate.py under the layout of runtime/parallel_plan.py;
rank 0 reports progress and returns the latents). Workers wait for commands on the store without a
time limit and exit when rank 0 goes away.

Failures end the session: a worker that dies or raises makes rank 0's collectives fail; rank 0 then
names the rank and its reason, stops every worker and destroys the group, and the next run starts a
fresh session. Commands are pickled; a worker renames the pack's module prefix (ComfyUI imports the
pack under its folder name, workers as `mova_pack`).
"""
from __future__ import annotations

import io
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.distributed as dist

from ..common.errors import InputError, MovaError, SamplingStopped
from .parallel_plan import choose_layout, parse_devices

log = logging.getLogger("mova")

PACKAGE = __name__.rsplit(".", 2)[0]          # how this process imported the pack
WORKER_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "mova_worker.py"
POLL_S = 0.05


class WorkerFailed(MovaError):
    """A rank stopped or failed; the session is over (the message names the rank and the reason)."""


# ------------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class MultiGPUSettings:
    devices: tuple                 # this machine's ranks in order: ("cuda:0", "cuda:1") or ("cpu", "cpu")
    strategy: str = "auto"
    port: int = 0                  # rendezvous port; 0 = a free one
    remote_ranks: int = 0          # ranks on other machines (started by hand, ranks len(devices)..)
    master_addr: str = "127.0.0.1"  # address the other ranks reach this machine at
    timeout_s: float = 600.0       # a collective waiting longer than this fails (a hung rank)

    @property
    def world(self) -> int:
        return len(self.devices) + self.remote_ranks

    @property
    def backend(self) -> str:
        return "nccl" if self.devices[0].startswith("cuda") else "gloo"


def device_names(text: str, cuda_count: Optional[int] = None) -> tuple:
    """The node's `devices` text as device names; refuses devices this machine does not have."""
    count, kind = parse_devices(text)
    entries = [e.strip().lower() for e in str(text).split(",")]
    if kind == "cpu":
        return ("cpu",) * count
    indices = [int(e.removeprefix("cuda:")) for e in entries]
    available = torch.cuda.device_count() if cuda_count is None else cuda_count
    missing = [i for i in indices if i >= available]
    if missing:
        raise InputError(f"devices {text!r} name GPU {', '.join(map(str, missing))} but this machine has "
                         f"{available} CUDA device{'s' if available != 1 else ''}"
                         f"{' (indices 0-' + str(available - 1) + ')' if available else ''}; list only existing "
                         "GPUs, or 'cpu,cpu' to run the ranks on the CPU.")
    return tuple(f"cuda:{i}" for i in indices)


def check_first_device(settings: MultiGPUSettings, own_device: torch.device) -> None:
    """Rank 0 runs in this process on the model's device: the first listed device must be it."""
    first = torch.device(settings.devices[0])
    own = torch.device(own_device)
    same = first.type == own.type and (first.type == "cpu" or (first.index or 0) == (own.index or 0))
    if not same:
        raise InputError(f"the first of the devices ({settings.devices[0]}) must be the device ComfyUI runs "
                         f"the model on ({own}): this process is rank 0. List {own} first.")


def check_port(port: int, addr: str) -> int:
    """A free port (port 0), or `port` when nothing listens on it; else a clear error."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("" if addr not in ("127.0.0.1", "localhost") else "127.0.0.1", int(port)))
        except OSError as exc:
            raise InputError(f"rendezvous port {port} is in use on this machine ({exc.strerror}): another MOVA "
                             "Multi-GPU session or program holds it. Set port 0 for a free one, or another "
                             "port the other machines can reach.") from None
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------ transport
def dumps(obj) -> bytes:
    """The sender's package name, a NUL, then the pickle (the receiver renames the package's modules)."""
    return PACKAGE.encode() + b"\0" + pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


class _Renaming(pickle.Unpickler):
    def __init__(self, data: bytes, sender_package: str):
        super().__init__(io.BytesIO(data))
        self.prefix = sender_package + "."

    def find_class(self, module, name):
        if module == self.prefix[:-1] or module.startswith(self.prefix):
            module = PACKAGE + module[len(self.prefix) - 1:]
        return super().find_class(module, name)


def loads(data: bytes):
    sender, _, body = data.partition(b"\0")
    return _Renaming(body, sender.decode()).load()


def passes_per_step(guidance, settings) -> int:
    """Joint forwards the busiest step needs (what the layout deals out to pass groups), from the plan
    of the guidance the sampler will use (a step cache's wrapped one; none = the released text CFG)."""
    from ..models.sampling.sampler import TextCFG
    inner = getattr(guidance, "inner", guidance) or TextCFG(settings.video_cfg, settings.audio_cfg)
    if hasattr(inner, "forwards_per_step"):   # bridge guidance: its plan depends on the step range
        return max(inner.forwards_per_step(settings.steps))
    return max(len(inner.plan(i, 0.0)) for i in range(settings.steps))


# ------------------------------------------------------------------------------------------ rank code
class _StopFlag:
    """`should_stop` for every rank: rank 0 asks ComfyUI (its callable may raise the interrupt) and
    broadcasts the answer over the control group; workers receive it."""

    def __init__(self, group, local: Optional[Callable] = None):
        self.group, self.local = group, local

    def __call__(self) -> bool:
        flag = torch.zeros(1, dtype=torch.int32)
        raised = None
        if self.local is not None:
            try:
                flag[0] = 1 if self.local() else 0
            except BaseException as exc:   # ComfyUI's interrupt: tell the workers first, then raise
                flag[0], raised = 1, exc
        dist.broadcast(flag, src=0, group=self.group)
        if raised is not None:
            raise raised
        return bool(flag[0])


class _Ranks:
    """What every rank keeps: the control group and the process groups of each layout used so far."""

    def __init__(self, rank: int, backend: str):
        self.rank = rank
        self.control = dist.new_group(backend="gloo") if backend != "gloo" else None
        self.layouts = {}

    def groups(self, pass_groups: int, sequence_ranks: int):
        from .parallel_groups import make_rank_groups
        key = (pass_groups, sequence_ranks)
        if key not in self.layouts:   # same order on every rank: the commands arrive in one order
            self.layouts[key] = make_rank_groups(pass_groups, sequence_ranks, self.rank)
        return self.layouts[key]

    def run_sample(self, generator, request: dict, on_step=None, should_stop=None):
        from ..models.sampling.generate import generate
        from .parallel_groups import sampling_on_ranks
        from .speed import apply_speed
        apply_speed(generator, request.pop("speed", None))
        groups = self.groups(*request.pop("layout"))
        stop = _StopFlag(self.control, should_stop if self.rank == 0 else None)
        with sampling_on_ranks(groups):
            return generate(generator, on_step=on_step, should_stop=stop, **request)


def load_on_rank(request: dict, device: str):
    """A worker's copy of the model: the same load path and options, on its own device."""
    from .loading import load, settings_from_options
    options = request["options"]
    settings = settings_from_options(options["dtype"], options["quantization"], options["offload"],
                                     options["resident_layers"], device, request.get("cache_dir"))
    return load(folder=request.get("folder"), files=request.get("files"), config=request.get("config"),
                settings=settings).generator


# ------------------------------------------------------------------------------------------ rank 0
@dataclass
class RankSession:
    """Rank 0's side: starts and stops the workers, sends commands, runs its own share."""
    settings: MultiGPUSettings
    load_request: dict
    procs: dict = field(default_factory=dict)     # rank -> Popen (local workers)
    port: int = 0
    run_dir: Path = None
    store: object = None
    ranks: _Ranks = None
    commands: int = 0
    alive: bool = False

    # ---- start / stop -------------------------------------------------------------------------
    def start(self) -> "RankSession":
        s = self.settings
        self.port = check_port(s.port, s.master_addr)
        self.run_dir = Path(tempfile.mkdtemp(prefix="mova_ranks_"))
        try:
            store = dist.TCPStore("0.0.0.0" if s.remote_ranks else "127.0.0.1", self.port, s.world, True,
                                  timedelta(seconds=s.timeout_s), wait_for_workers=False)
        except Exception as exc:
            raise InputError(f"cannot open the rendezvous on port {self.port}: {exc}. Set port 0 for a free one.") \
                from None
        self.store = dist.PrefixStore("mova", store)
        for rank in range(1, len(s.devices)):
            self.procs[rank] = self._spawn(rank, s.devices[rank])
        self.alive = True
        try:
            self._wait_for("joined", "to join the rendezvous")
            if dist.is_initialized():
                dist.destroy_process_group()   # an earlier session of this process
            if s.backend == "nccl":
                torch.cuda.set_device(torch.device(s.devices[0]))   # NCCL uses the current device
            dist.init_process_group(s.backend, store=store, rank=0, world_size=s.world,
                                    timeout=timedelta(seconds=s.timeout_s))
            self.ranks = _Ranks(0, s.backend)
            self.command("load", self.load_request)
            self._wait_for(f"reply/{self.commands - 1}", "to load the model")
        except BaseException:
            self.stop()
            raise
        log.info("MOVA multi-GPU: %d ranks (%s%s) on port %d", s.world, ", ".join(s.devices),
                 f" + {s.remote_ranks} remote" if s.remote_ranks else "", self.port)
        return self

    def _spawn(self, rank: int, device: str) -> subprocess.Popen:
        args = [sys.executable, str(WORKER_SCRIPT), "--rank", str(rank), "--world-size", str(self.settings.world),
                "--master-addr", "127.0.0.1", "--master-port", str(self.port), "--device", device,
                "--error-file", str(self.run_dir / f"rank{rank}.error"), "--timeout-s", str(self.settings.timeout_s)]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if device.startswith("cuda"):   # NCCL errors surface instead of hanging until the timeout
            env.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        log_file = open(self.run_dir / f"rank{rank}.log", "wb")
        args += ["--parent-pid", str(os.getpid())]   # the worker asks to die with us (no preexec_fn: threads)
        return subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env=env)

    def stop(self) -> None:
        """Stop every worker (a polite command first, then signals) and leave the process group."""
        if self.store is not None and self.alive:
            try:
                self.command("stop", None)
            except Exception:
                pass
        self.alive = False
        deadline = time.monotonic() + 5
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception as exc:   # a broken group: nothing left to release cleanly
                log.debug("mova multi-GPU: destroy_process_group after a failure: %s", exc)
        self.store = None

    # ---- commands -----------------------------------------------------------------------------
    def command(self, name: str, payload) -> None:
        self.store.set(f"cmd/{self.commands}", dumps((name, payload)))
        self.commands += 1

    def _wait_for(self, key: str, what: str) -> None:
        """Every worker's `key/<rank>`, watching the local workers meanwhile."""
        keys = [f"{key}/{r}" for r in range(1, self.settings.world)]
        deadline = time.monotonic() + self.settings.timeout_s
        while not self.store.check(keys):
            self._check_workers(what)
            if time.monotonic() > deadline:
                missing = [k.rsplit("/", 1)[1] for k in keys if not self.store.check([k])]
                raise WorkerFailed(f"MOVA multi-GPU: rank(s) {', '.join(missing)} did not manage {what} within "
                                   f"{self.settings.timeout_s:.0f} s (remote ranks: start scripts/mova_worker.py "
                                   f"with --master-addr {self.settings.master_addr} --master-port {self.port}).")
            time.sleep(POLL_S)
        for k in keys:
            status = self.store.get(k)
            if status != b"ok":
                raise WorkerFailed(f"MOVA multi-GPU: rank {k.rsplit('/', 1)[1]} failed {what}: {status.decode()}")

    def _check_workers(self, what: str) -> None:
        for rank, proc in self.procs.items():
            if proc.poll() is not None:
                raise WorkerFailed(f"MOVA multi-GPU: rank {rank} ({self.settings.devices[rank]}) stopped {what}: "
                                   f"{self.failure_of(rank)}")

    def failure_of(self, rank: int) -> str:
        error = self.run_dir / f"rank{rank}.error"
        if error.exists() and error.read_text().strip():
            return error.read_text().strip().splitlines()[-1]
        proc = self.procs.get(rank)
        if proc is None:
            return "a remote rank disconnected"
        code = proc.poll()
        if code is None:
            return "still running, but its connection failed"
        if code < 0:
            return f"killed by signal {signal.Signals(-code).name}"
        tail = (self.run_dir / f"rank{rank}.log").read_text(errors="replace").strip().splitlines()[-1:] or [""]
        return f"exited with code {code} {tail[0]}".strip()

    # ---- sampling -----------------------------------------------------------------------------
    def sample(self, generator, request: dict, on_step=None, should_stop=None):
        """generate() on every rank; returns rank 0's latents (all ranks hold the same)."""
        if not self.alive:
            raise WorkerFailed("MOVA multi-GPU: this session has ended; the next run starts a new one.")
        layout = layout_for(self.settings, generator, request)
        log.info("MOVA multi-GPU layout: %s", layout.reason)
        request = dict(request, layout=(layout.pass_groups, layout.sequence_ranks))
        self.command("sample", request)
        try:
            return self.ranks.run_sample(generator, dict(request), on_step, should_stop)
        except Exception as exc:
            if type(exc).__name__ == "InterruptProcessingException" or isinstance(exc, (SamplingStopped, InputError)):
                raise   # the workers stopped with us (interrupt flag) or refused the request as we did
            reason = self._failed_rank_reason() or f"rank 0: {type(exc).__name__}: {exc}"
            self.stop()
            raise WorkerFailed(f"MOVA multi-GPU run failed ({reason}); the other ranks were stopped and the next "
                               "run starts a fresh session.") from exc

    def _failed_rank_reason(self) -> str:
        time.sleep(0.2)   # let a dying worker finish writing its error
        for rank, proc in self.procs.items():
            if proc.poll() is not None or (self.run_dir / f"rank{rank}.error").exists():
                return f"rank {rank} ({self.settings.devices[rank]}): {self.failure_of(rank)}"
        return ""

    @property
    def worker_pids(self) -> list:
        return [p.pid for p in self.procs.values()]


def _die_with_parent(parent_pid: Optional[int]) -> None:
    """Linux: this worker gets SIGTERM when the process that started it dies (no orphans); if that
    already happened before the request, exit now."""
    if parent_pid is None or not sys.platform.startswith("linux"):
        return
    import ctypes
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() != parent_pid:
        os._exit(1)


def layout_for(settings: MultiGPUSettings, generator, request: dict):
    """The layout of one run (refused before any worker starts when the ranks cannot split it)."""
    return choose_layout(settings.world, settings.strategy,
                         passes_per_step(request.get("guidance"), request["settings"]),
                         generator.config.video_dit.num_heads)


def sample_on_ranks(key, settings: MultiGPUSettings, load_request: dict, generator, request: dict,
                    on_step=None, should_stop=None):
    """Check the layout, start (or reuse) the session for `key`, and sample on every rank."""
    layout_for(settings, generator, request)
    return session_for(key, settings, load_request).sample(generator, request, on_step, should_stop)


# ------------------------------------------------------------------------------------------ registry
_session: Optional[RankSession] = None
_session_key = None


def session_for(key, settings: MultiGPUSettings, load_request: dict) -> RankSession:
    """The running session for `key` (the model and the settings), or a new one (ending any other:
    a process holds one process group)."""
    global _session, _session_key
    if _session is not None and (_session_key != key or not _session.alive):
        stop_session()
    if _session is None:
        _session = RankSession(settings, load_request).start()
        _session_key = key
    return _session


def stop_session() -> None:
    global _session, _session_key
    if _session is not None:
        session, _session, _session_key = _session, None, None
        session.stop()


def current_session() -> Optional[RankSession]:
    return _session


# ------------------------------------------------------------------------------------------ workers
def worker_main(rank: int, world: int, master_addr: str, master_port: int, device: str,
                error_file: Optional[str] = None, timeout_s: float = 600.0, parent_pid: Optional[int] = None) -> int:
    """A worker rank: join, then run commands until "stop" or until rank 0 is gone."""
    _die_with_parent(parent_pid)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    try:
        store = dist.TCPStore(master_addr, master_port, world, False, timedelta(seconds=timeout_s))
        mova = dist.PrefixStore("mova", store)
        mova.set(f"joined/{rank}", b"ok")
        dist.init_process_group(backend, store=store, rank=rank, world_size=world,
                                timeout=timedelta(seconds=timeout_s))
        ranks = _Ranks(rank, backend)
        generator, n = None, 0
        while True:
            name, payload = loads(_next_command(mova, n))
            if name == "stop":
                break
            if name == "load":
                try:
                    generator = load_on_rank(payload, device)
                except Exception as exc:
                    mova.set(f"reply/{n}/{rank}", f"{type(exc).__name__}: {exc}".encode())
                    raise
                mova.set(f"reply/{n}/{rank}", b"ok")
            elif name == "sample":
                try:
                    ranks.run_sample(generator, payload)
                except (SamplingStopped, InputError):
                    pass   # stopped with rank 0 (interrupt flag), or the request refused on every rank
            n += 1
        dist.destroy_process_group()
        return 0
    except BaseException as exc:
        if error_file:
            Path(error_file).write_text(f"{type(exc).__name__}: {exc}\n")
        os._exit(1)   # the other ranks' collectives fail at once instead of waiting for a timeout


def _next_command(store, n: int) -> bytes:
    """Wait for command n as long as rank 0 lives (its store going away ends the wait with an error)."""
    key = f"cmd/{n}"
    while True:
        try:
            store.wait([key], timedelta(seconds=2))
            return store.get(key)
        except Exception as exc:
            if "timeout" in str(exc).lower() or "Timed out" in str(exc):
                continue
            raise

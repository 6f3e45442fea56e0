"""Run one child evaluation in its own OS process, with limits, and get its result back.

The generated program is untrusted: it is only ever loaded inside the process started
here (``python -m evo.sandbox.worker``), never in the search process. Protections, from
the most portable to the most privileged; :func:`describe_isolation` says which are active:

* **rlimits** (always): ``RLIMIT_AS`` = ``memory_mb`` (see "memory" below), ``RLIMIT_CPU``
  (SIGXCPU -> TIMEOUT "cpu limit"), ``RLIMIT_FSIZE`` = ``max_file_mb`` (also caps the log),
  no core dumps. Set by the worker before it imports anything untrusted.
* **wall clock**: the parent SIGKILLs the whole tree at ``timeout_s`` -> TIMEOUT.
* **process tree**: own session/process group, killed with ``killpg`` afterwards; the
  worker is a subreaper and kills what its child left behind; under bwrap the child has
  its own PID namespace (``--unshare-pid --die-with-parent``), so even a daemon that
  escaped with ``setsid`` dies with it; with cgroups every task of the group is killed.
* **bwrap** (bubblewrap, unprivileged user namespaces; the portable layer on a cluster):
  no network (own net namespace: the host's loopback services are unreachable), own
  PID/IPC/UTS/user namespaces, all capabilities dropped, and a minimal read-only root:
  only the system directories (/usr, /lib*, /bin, a few files of /etc), the Python
  installation, the ``evo`` package, ``extra_pythonpath`` and ``readonly_paths`` are
  visible. Writable: the private work folder (HOME and cwd, ``/sandbox`` inside) and a
  private ``/tmp``, tmpfs of ``scratch_mb`` each (None: folders next to the private folder on
  disk), and ``/dev/shm`` (tmpfs of ``max_file_mb``), all gone afterwards.
* **cgroup v1**, else **v2** (unified hierarchy, our delegated subtree or the mount's root, when a probe
  group gets the memory and pids controllers; cgroup.kill ends the tree): a hard memory cap of
  ``memory_mb`` for the whole tree (RLIMIT_AS is per process), a task cap ``max_tasks``
  (a fork bomb stops there) and a reliable kill of every task in the group.

Memory: ``RLIMIT_AS`` caps virtual address space per process. Measured with jax 0.10.2 on
CPU (1 thread): importing jax/flax/optax and training a small conv net peaks at ~1.5 GB
virtual, ~0.33 GB resident, so the default 4096 MB leaves room while an allocation of
several GB fails at once, in-process, as ``MemoryError`` / XLA ``RESOURCE_EXHAUSTED``
that the worker reports as MEMORY with the real message. (At 1024 MB XLA cannot even
start its thread pools: "pthread_create() failed", also mapped to MEMORY.) RLIMIT_DATA
was not needed. RLIMIT_AS is unworkable with CUDA (the driver reserves huge virtual
ranges): for a GPU child pass ``memory_mb=None`` and rely on the cgroup cap (if any).

Result channel: a dedicated pipe (the child's fd ``N``, inherited only by the worker
process, not by anything it spawns) and a per-run random nonce sent on stdin, which the
worker reads before any untrusted code is loaded. The child's stdout/stderr go to a log
file, whose tail comes back as ``log_tail``; prints cannot reach the channel, and lines on
the channel without the nonce (or not JSON) are ignored. Code that runs in the worker's interpreter can,
with deliberate introspection, find the nonce and report a result of its choosing: so for the entries in
``TWO_STAGE`` (MNIST-1D, CLRS) the child's process only exports its model, and the score comes from a second
process that never runs child code (evo/sandbox/exported.py, evo/tasks/mnist1d/trusted.py, evo/tasks/clrs/trusted.py;
pooled, see TRUSTED_POOL). Other entries are scored in the child's process and could lie about their score.

Secrets: the search process is made non-dumpable and the worker drops every capability before child code,
so no child can read another process's /proc/<pid>/environ, mem or fd/ even with isolation=none as root.
"""

from __future__ import annotations

import atexit
import functools
import hmac
import json
import logging
import os
import secrets
import select
import selectors
import shutil
import site
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

from evo import outcome
from evo.errors import fail
from evo.sandbox.worker import OOM_SIGNATURES, set_non_dumpable

log = logging.getLogger(__name__)

# Every child process running now, with its cgroup: ``kill_running`` ends them all at once when the
# search is interrupted (Ctrl-C, a SLURM preemption) instead of waiting for them to finish.
_RUNNING: dict[int, tuple[subprocess.Popen, "_Cgroup | None"]] = {}
_RUNNING_LOCK = threading.Lock()
# Set by kill_running until allow_new: a child that a worker thread was still starting when the search
# was interrupted is killed as soon as it exists, instead of training to its end while the search
# waits for that thread to return.
_REFUSING = False

LOG_TAIL_CHARS = 2000
MAX_RESULT_BYTES = 16 << 20  # what the parent keeps of the result channel (the last part)
_KILL_GRACE_S = 5.0  # how long to wait for the tree to die after SIGKILL
SANDBOX_HOME = "/sandbox"  # the private work folder, as the child sees it under bwrap


@dataclass(frozen=True)
class SandboxLimits:
    """What one child process may use. These fields are also the ``sandbox`` config node (evo.config's
    schema): their defaults are the config's."""
    timeout_s: float = 900.0      # wall clock per child (build + train + evaluate)
    memory_mb: int | None = 4096  # memory cap per child: RLIMIT_AS per process (+ cgroup cap for the tree); None: none
    cpu_s: float | None = None    # CPU-time cap; None -> timeout_s * threads + 10
    max_file_mb: int = 64         # largest file a child may write: RLIMIT_FSIZE (its log too)
    threads: int = 1              # XLA/BLAS/OMP threads per child (2 cores here: the LM uses the other)
    isolation: str = "auto"       # auto: bubblewrap (no network, private fs and pids) when usable, else rlimits only
                                  #   (with a warning); bwrap | none
    cgroup: bool = True           # use a cgroup (memory + task cap, tree kill) when one can be created
    max_tasks: int = 512          # cgroup pids cap (threads count: jax on CPU alone uses ~20)
    address_space: bool = True    # cap memory_mb with RLIMIT_AS too. False for a GPU child: CUDA reserves
                                  # huge virtual ranges, so only the cgroup (resident memory) can cap it
    scratch_mb: int | None = 1024  # bwrap: /tmp and the work folder are tmpfs of this size each (in memory, so
                                   # the cgroup memory cap counts them); None: folders on disk. isolation=none:
                                   # folders on disk, only max_file_mb per file
    landlock: bool = True         # without bwrap (isolation=none, or auto on a host without it): confine the child
                                  #   with Landlock where the kernel has it: files readable only beneath the system
                                  #   and Python folders, evo and readonly_paths, writable only in its own folder;
                                  #   no TCP; no signals or abstract sockets out of its process tree
    seccomp: bool = True          # no sockets: socket(2) and io_uring_setup(2) fail with EPERM in the child (seccomp),
                                  #   closing UDP and named unix sockets, which Landlock (ABI 7) leaves open under
                                  #   isolation=none; socketpair(2) stays (it reaches nobody)
    compile_cache: str | None = None  # folder of the trusted stages' persistent XLA compilation cache (a program
                                  #   trained again, e.g. by evo.heldout, a resumed run or another run's seeds,
                                  #   skips its compile); used only where no child can write it (bwrap, or
                                  #   Landlock), else off and the run log says so. None: off

    @staticmethod
    def check_config(node, cfg) -> None:
        """The ``sandbox`` node, before any compute (evo.config.validate asks); names the key and a fix."""
        if node.threads < 1:
            fail("sandbox.threads", node.threads, "It counts something and must be at least 1.", "pass sandbox.threads=1 or more.")
        if node.isolation not in ("auto", "bwrap", "none"):
            fail("sandbox.isolation", node.isolation, "Allowed values: auto, bwrap, none.", "pass sandbox.isolation=auto.")
        if node.timeout_s <= 0 or node.memory_mb is not None and node.memory_mb < 256:
            fail("sandbox.timeout_s/memory_mb", (node.timeout_s, node.memory_mb),
                 "A child needs a positive timeout and at least 256 MB.", "pass sandbox.timeout_s=900 sandbox.memory_mb=4096.")

    def cpu_limit_s(self) -> float:
        if self.cpu_s is not None:
            return float(self.cpu_s)
        return self.timeout_s * max(1, self.threads) + 10.0

    def __post_init__(self):
        if self.isolation not in ("auto", "bwrap", "none"):
            raise ValueError(f"isolation must be auto, bwrap or none, not {self.isolation!r}")
        if self.timeout_s <= 0 or self.threads < 1:
            raise ValueError("timeout_s must be > 0 and threads >= 1")


@dataclass
class SandboxResult:
    status: str        # evo.outcome constant: OK (the entry returned) or a failure status
    reason: str        # one line for a person
    payload: dict      # what the entry function returned (empty on failure)
    wall_s: float
    log_tail: str      # last ~2000 chars of the child's stdout+stderr
    isolation: str     # which protections were active, e.g. "bwrap(net,pid,fs)+rlimits"
    returncode: int | None = field(default=None)  # of the sandbox process (bwrap: 128+signal)


# ---------------------------------------------------------------- capability detection

_BWRAP_OK: dict[str, tuple[bool, str]] = {}
_CGROUP_OK: list[bool] = []
_CGROUP_V1 = "/sys/fs/cgroup"


def _bwrap_usable() -> tuple[bool, str]:
    """Can bwrap build our sandbox here? (cached; a failed probe says why)"""
    exe = shutil.which("bwrap")
    if not exe:
        return False, "bwrap not found (apt-get install bubblewrap)"
    if exe in _BWRAP_OK:
        return _BWRAP_OK[exe]
    true = shutil.which("true") or "/bin/true"
    with tempfile.TemporaryDirectory(prefix="evo-sbx-probe-") as tmp:
        os.mkdir(os.path.join(tmp, "work"))
        os.mkdir(os.path.join(tmp, "tmp"))
        cmd = _bwrap_argv(exe, tmp, 16, (), ()) + [true]
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
            ok = proc.returncode == 0
            why = "" if ok else (proc.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        except (OSError, subprocess.TimeoutExpired) as exc:
            ok, why = False, f"{type(exc).__name__}: {exc}"
    _BWRAP_OK[exe] = (ok, f"bwrap unusable here: {why}" if not ok else "")
    return _BWRAP_OK[exe]


def _cgroup_usable() -> bool:
    """A cgroup with a memory and a task cap can be made for each child: v1 (below) or v2 (_cgroup2_parent)."""
    return _cgroup_v1_usable() or _cgroup2_parent() is not None


_CGROUP2_PARENT: list = []


def _cgroup2_parent() -> str | None:
    """A cgroup v2 folder where we may create child groups with the memory and pids controllers, or None.

    Unified hierarchy (``/sys/fs/cgroup``, or ``/sys/fs/cgroup/unified`` on hybrid hosts): our own group (from
    /proc/self/cgroup, the delegated subtree a systemd scope or a container gives us) or the mount's root. We try
    to enable memory and pids for child groups (``cgroup.subtree_control``; refused in a non-root group that has
    processes of its own) and keep the folder if a probe group then has both. On hybrid hosts where memory and
    pids are bound to v1 (as on the dev machine) there is none."""
    if not _CGROUP2_PARENT:
        found = None
        try:
            with open("/proc/self/mounts") as fh:
                mounts = [line.split()[1] for line in fh if line.split()[2:3] == ["cgroup2"]]
            with open("/proc/self/cgroup") as fh:
                own = next((line.strip()[3:] for line in fh if line.startswith("0::")), "/")
        except OSError:
            mounts, own = [], "/"
        for mount in mounts:
            for base in dict.fromkeys([os.path.join(mount, own.lstrip("/")), mount]):
                if os.path.isdir(base) and _cgroup2_controllers(base) >= {"memory", "pids"}:
                    found = base
                    break
            if found:
                break
        _CGROUP2_PARENT.append(found)
    return _CGROUP2_PARENT[0]


def _cgroup2_controllers(parent: str) -> set:
    """The controllers a new child group of ``parent`` gets (after trying to enable memory and pids)."""
    try:
        _write(os.path.join(parent, "cgroup.subtree_control"), "+memory +pids")
    except OSError:
        pass
    probe = os.path.join(parent, f"evo-sbx-probe-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        os.mkdir(probe)
    except OSError:
        return set()
    try:
        with open(os.path.join(probe, "cgroup.controllers")) as fh:
            return set(fh.read().split())
    except OSError:
        return set()
    finally:
        try:
            os.rmdir(probe)
        except OSError:
            pass


def _make_cgroup(name: str, memory_mb: int | None, max_tasks: int) -> "_Cgroup":
    """v1 where usable (the dev machine), else v2."""
    if _cgroup_v1_usable():
        return _Cgroup(name, memory_mb, max_tasks)
    return _Cgroup2(_cgroup2_parent(), name, memory_mb, max_tasks)


def _cgroup_v1_usable() -> bool:
    """cgroup v1 memory+pids hierarchies where we may create groups (typically: root)."""
    if not _CGROUP_OK:
        ok = False
        probe = f"evo-sbx-probe-{os.getpid()}-{secrets.token_hex(4)}"
        made = []
        try:
            for ctrl in ("memory", "pids"):
                path = os.path.join(_CGROUP_V1, ctrl, probe)
                os.mkdir(path)
                made.append(path)
            ok = all(os.path.exists(os.path.join(made[0], f))
                     for f in ("memory.limit_in_bytes", "memory.oom_control"))
        except OSError:
            ok = False
        finally:
            for path in made:
                try:
                    os.rmdir(path)
                except OSError:
                    pass
        _CGROUP_OK.append(ok)
    return _CGROUP_OK[0]


def _use_bwrap(limits: SandboxLimits) -> bool:
    if limits.isolation == "none":
        return False
    ok, why = _bwrap_usable()
    if ok:
        return True
    if limits.isolation == "bwrap":
        raise RuntimeError(f"isolation='bwrap' requested but {why}")
    warnings.warn(f"evo.sandbox.runner: {why}; children run with rlimits only (no network, "
                  "filesystem or PID isolation)", RuntimeWarning, stacklevel=3)
    return False


def describe_isolation(limits: SandboxLimits, _bwrap: bool | None = None) -> str:
    """What protections a child gets here with these limits, for the run's log."""
    parts = []
    bwrap = _use_bwrap(limits) if _bwrap is None else _bwrap
    if bwrap:
        parts.append("bwrap(net,pid,ipc,uts,user,caps,fs)")
        if limits.scratch_mb:
            parts.append(f"scratch(tmpfs={limits.scratch_mb}MB)")
    rl = []
    if limits.memory_mb and limits.address_space:
        rl.append(f"as={limits.memory_mb}MB")
    rl.append(f"cpu={limits.cpu_limit_s():g}s")
    rl.append(f"fsize={limits.max_file_mb}MB")
    parts.append("rlimits(" + ",".join(rl) + ")")
    if limits.cgroup and _cgroup_usable():
        mem = f"memory={limits.memory_mb}MB," if limits.memory_mb else ""
        version = "cgroup" if _cgroup_v1_usable() else "cgroup2"
        parts.append(f"{version}({mem}tasks={limits.max_tasks})")
    if _use_landlock(limits, bwrap):
        abi = _landlock_abi()
        # what each ABI adds: 1-3 files, 4 TCP, 6 signals and abstract unix sockets (kernel docs, "Landlock ABI")
        got = ["fs"] + (["tcp"] if abi >= 4 else []) + (["signal,abstract-unix"] if abi >= 6 else [])
        parts.append(f"landlock(abi={abi}:{','.join(got)})")
    if _use_seccomp(limits):
        parts.append("seccomp(no-sockets)")
    parts.append(f"wall={limits.timeout_s:g}s")
    # always: the search process is made non-dumpable and the worker drops every capability (see run_in_sandbox)
    parts.append("secrets(nondumpable-parent,no-caps)")
    return "+".join(parts)


@functools.lru_cache(maxsize=None)
def _landlock_abi() -> int:
    """The kernel's Landlock ABI version (0: none: too old a kernel, disabled at boot, or landlockpy missing)."""
    try:
        import landlockpy  # an install without it runs without Landlock, and the run log says so
    except ImportError:
        return 0
    return landlockpy.abi_version()


@functools.lru_cache(maxsize=None)
def _seccomp_usable() -> bool:
    """pyseccomp and the system's libseccomp are there (a host without them runs without the filter, and says so)."""
    try:
        import pyseccomp  # noqa: F401  ctypes over libseccomp.so.2: RuntimeError at import when it is missing
    except (ImportError, OSError, RuntimeError):
        return False
    return True


def _use_seccomp(limits: SandboxLimits) -> bool:
    return limits.seccomp and _seccomp_usable()


def _use_landlock(limits: SandboxLimits, use_bwrap: bool) -> bool:
    # under bwrap the child's root is already read-only and its network gone: Landlock would add nothing there
    return limits.landlock and not use_bwrap and _landlock_abi() > 0


def _landlock_rules(private: str, readonly_paths: Sequence[str], devices: Sequence[str],
                    writable: Sequence[str] = ()) -> dict:
    """What a child confined by Landlock may touch: the paths bwrap would show it, at their host paths (the worker
    enforces them, evo.sandbox.worker.apply_landlock). read: read and execute beneath; write: everything beneath."""
    read = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"]
    read += [os.path.join("/etc", name) for name in _ETC_FILES]
    # /proc: the worker walks it to kill leftovers, jax reads cpuinfo; other processes' environ, mem and fd/ stay
    # refused (non-dumpable, no capabilities). /sys: jax reads the CPU topology.
    read += ["/proc", "/sys/devices/system/cpu", "/sys/devices/system/node", "/dev/urandom", "/dev/random",
             "/dev/zero"]
    read += _python_paths() + [os.path.abspath(p) for p in readonly_paths]
    write = [private, "/dev/null"] + list(devices) + [os.path.abspath(p) for p in writable]
    return {"read": [p for p in read if os.path.exists(p)], "write": [p for p in write if os.path.exists(p)]}


def _confinement(limits: SandboxLimits, use_bwrap: bool, private: str, readonly_paths: Sequence[str],
                 extra_pythonpath: Sequence[str], devices: Sequence[str], writable: Sequence[str]) -> dict:
    """What a worker applies to itself before its entry (evo.sandbox.worker.confine): Landlock's rules where they
    apply, and whether to deny sockets."""
    out = {"no_sockets": _use_seccomp(limits)}
    if _use_landlock(limits, use_bwrap):
        out["landlock"] = _landlock_rules(private, list(readonly_paths) + list(extra_pythonpath), devices, writable)
    return out


# The trusted stages' XLA compilation cache: jax's own persistent cache (content-addressed by the computation and
# the compiler's options), with its size-capped LRU eviction, whose file lock also keeps concurrent workers apart.
COMPILE_CACHE_MAX_BYTES = 2 << 30
# what jax caches: every compilation (its default, 1 s, would leave out the evaluation step, compiled anew per child)
COMPILE_CACHE_MIN_COMPILE_S = 0.0


def compile_cache_for(limits: SandboxLimits) -> tuple[str | None, str]:
    """(the folder the trusted stages keep their compilation cache in, or None; a line for the run log).

    A cached executable is native code that a trusted worker loads and runs, so the folder is used only where no
    child can write it: under bwrap a child sees only its own folders, and under Landlock it may write only in its
    own. Without either (isolation=none on a kernel without Landlock, or sandbox.landlock=false) a child runs as
    the search's user and could plant an executable there: the cache is then off."""
    if not limits.compile_cache:
        return None, "off (sandbox.compile_cache=null)"
    if not (_use_bwrap(limits) or _use_landlock(limits, False)):
        return None, ("off: without bwrap or Landlock a child could write the cache folder, and a trusted worker "
                      "would load what it planted there")
    path = os.path.abspath(os.path.expanduser(limits.compile_cache))
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path, f"XLA compilation cache in {path} (trusted stages only)"


def _compile_cache_env(path: str) -> dict[str, str]:
    return {"JAX_COMPILATION_CACHE_DIR": path, "JAX_COMPILATION_CACHE_MAX_SIZE": str(COMPILE_CACHE_MAX_BYTES),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": str(COMPILE_CACHE_MIN_COMPILE_S)}


# ---------------------------------------------------------------- bwrap command line

_ETC_FILES = ("passwd", "group", "nsswitch.conf", "hosts", "host.conf", "localtime",
              "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "ssl", "ca-certificates",
              "alternatives", "os-release", "mime.types", "timezone")


def _python_paths() -> list[str]:
    """Host paths the child's Python needs: the installation(s) and their site-packages."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            paths.add(p)
    try:
        paths.update(site.getsitepackages())
    except AttributeError:  # old virtualenv
        pass
    # the evo package itself (an editable install maps it from the repository)
    paths.add(os.path.dirname(os.path.abspath(outcome.__file__)))
    return sorted(p for p in paths if p and os.path.exists(p))


def _bwrap_argv(exe: str, private: str, shm_mb: int, ro_paths: Sequence[str],
                devices: Sequence[str], scratch_mb: int | None = None, writable: Sequence[str] = ()) -> list[str]:
    """scratch_mb: /tmp and the work folder become tmpfs of that size each (a child that fills them, or writes
    many small files, gets ENOSPC there and not on the host's disk); None: folders of ``private`` on disk.
    writable: host folders bound read-write at their path (only a trusted stage gets any: compile_cache_for)."""
    argv = [exe, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--hostname", "sandbox"]
    for top in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    for name in _ETC_FILES:
        path = os.path.join("/etc", name)
        if os.path.lexists(path):
            argv += ["--ro-bind-try", path, path]
    for path in ("/sys/devices/system/cpu", "/sys/devices/system/node"):
        if os.path.isdir(path):
            argv += ["--ro-bind-try", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev",
             "--size", str(shm_mb << 20), "--tmpfs", "/dev/shm",
             ]
    if scratch_mb:
        argv += ["--size", str(scratch_mb << 20), "--tmpfs", "/tmp",
                 "--size", str(scratch_mb << 20), "--tmpfs", SANDBOX_HOME]
    else:
        argv += ["--bind", os.path.join(private, "tmp"), "/tmp", "--bind", os.path.join(private, "work"), SANDBOX_HOME]
    for path in list(_python_paths()) + [os.path.abspath(p) for p in ro_paths]:
        argv += ["--ro-bind", path, path]
    for path in writable:
        argv += ["--bind", os.path.abspath(path), os.path.abspath(path)]
    for dev in devices:
        argv += ["--dev-bind", dev, dev]
    argv += ["--remount-ro", "/", "--chdir", SANDBOX_HOME]  # bwrap's own root tmpfs too
    return argv


# ---------------------------------------------------------------- cgroup v1

class _Cgroup:
    def __init__(self, name: str, memory_mb: int | None, max_tasks: int):
        self.dirs: list[str] = []
        try:
            for ctrl in ("memory", "pids"):
                path = os.path.join(_CGROUP_V1, ctrl, name)
                os.mkdir(path, 0o700)
                self.dirs.append(path)
            mem, pids = self.dirs
            if memory_mb:
                _write(os.path.join(mem, "memory.limit_in_bytes"), str(memory_mb << 20))
                _write(os.path.join(mem, "memory.swappiness"), "0", missing_ok=True)
            _write(os.path.join(pids, "pids.max"), str(max_tasks))
        except BaseException:
            self.remove()
            raise

    def join_prefix(self) -> list[str]:
        """argv prefix that moves the process into the group before it execs the rest."""
        script = " && ".join(f'echo $$ > "{d}/cgroup.procs"' for d in self.dirs) + ' && exec "$@"'
        return ["/bin/sh", "-c", script, "evo-sandbox"]

    def oom_killed(self) -> bool:
        """Did the kernel OOM-kill a task of this group (the memory cap was hit)?"""
        try:
            with open(os.path.join(self.dirs[0], "memory.oom_control")) as fh:
                for line in fh:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and int(value) > 0:
                        return True
        except (OSError, ValueError, IndexError):
            pass
        return False

    def tasks_hit_cap(self) -> bool:
        try:
            with open(os.path.join(self.dirs[1], "pids.events")) as fh:
                return any(line.startswith("max ") and int(line.split()[1]) > 0 for line in fh)
        except (OSError, ValueError, IndexError):
            return False

    def kill_all(self) -> None:
        deadline = time.monotonic() + _KILL_GRACE_S
        while time.monotonic() < deadline:
            pids = set()
            for d in self.dirs:
                try:
                    with open(os.path.join(d, "cgroup.procs")) as fh:
                        pids.update(int(x) for x in fh.read().split())
                except (OSError, ValueError):
                    pass
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.02)
        log.warning("evo.sandbox.runner: tasks left in cgroup %s after SIGKILL", self.dirs)

    def remove(self) -> None:
        for d in self.dirs:
            for _ in range(50):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
            else:
                log.warning("evo.sandbox.runner: could not remove cgroup %s", d)


class _Cgroup2(_Cgroup):
    """One cgroup v2 group under ``parent``: memory.max (swap off), pids.max, cgroup.kill."""

    def __init__(self, parent: str, name: str, memory_mb: int | None, max_tasks: int):
        self.path = os.path.join(parent, name)
        os.mkdir(self.path, 0o700)
        self.dirs = [self.path]
        try:
            with open(os.path.join(self.path, "cgroup.controllers")) as fh:
                self.controllers = set(fh.read().split())
            if memory_mb and "memory" in self.controllers:
                _write(os.path.join(self.path, "memory.max"), str(memory_mb << 20))
                _write(os.path.join(self.path, "memory.swap.max"), "0", missing_ok=True)
            if "pids" in self.controllers:
                _write(os.path.join(self.path, "pids.max"), str(max_tasks))
        except BaseException:
            self.remove()
            raise

    def _events(self, filename: str, key: str) -> int:
        try:
            with open(os.path.join(self.path, filename)) as fh:
                for line in fh:
                    name, _, value = line.partition(" ")
                    if name == key:
                        return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def oom_killed(self) -> bool:
        return self._events("memory.events", "oom_kill") > 0

    def tasks_hit_cap(self) -> bool:
        return self._events("pids.events", "max") > 0

    def kill_all(self) -> None:
        # cgroup.kill (Linux 5.14) SIGKILLs every task of the group at once, forks in flight included
        try:
            _write(os.path.join(self.path, "cgroup.kill"), "1")
        except OSError:
            pass
        super().kill_all()  # waits until cgroup.procs is empty (and kills by pid where cgroup.kill is missing)


def _write(path: str, text: str, missing_ok: bool = False) -> None:
    try:
        with open(path, "w") as fh:
            fh.write(text)
    except FileNotFoundError:
        if not missing_ok:
            raise


# ---------------------------------------------------------------- environment

def child_env(limits: SandboxLimits, home: str, tmp: str, pythonpath: Sequence[str],
              extra_env: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The child's whole environment: nothing of the parent's (no API keys) leaks in."""
    n = str(limits.threads)
    py_bin = os.path.dirname(sys.executable)
    env = {
        "PATH": os.pathsep.join(dict.fromkeys([py_bin, "/usr/local/bin", "/usr/bin", "/bin"])),
        "LANG": "C.UTF-8",
        "HOME": home,
        "TMPDIR": tmp,
        "PYTHONPATH": os.pathsep.join(pythonpath),
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
        "OPENBLAS_NUM_THREADS": n,
        "NUMEXPR_NUM_THREADS": n,
        "TF_NUM_INTRAOP_THREADS": n,
        "TF_NUM_INTEROP_THREADS": n,
        "JAX_PLATFORMS": "cpu",  # a GPU caller overrides this through extra_env
        "MPLCONFIGDIR": os.path.join(home, ".config", "matplotlib"),
        "XDG_CACHE_HOME": os.path.join(home, ".cache"),
        "WANDB_MODE": "disabled",
    }
    if limits.threads == 1:
        env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false"  # threads are really capped by `cpus`
    for key, value in (extra_env or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


# ---------------------------------------------------------------- the run

# Entries whose scores must not come from the process that runs the child's Python (evo/sandbox/exported.py):
# entry -> (untrusted entry, trusted entry, the kwargs the untrusted stage gets, the keys of its payload the
# trusted stage gets). run_in_sandbox runs the untrusted entry on the code (it sees no data: readonly_paths
# are not given to it), then the trusted entry in a second, fresh process, on all of ``kwargs`` and those
# payload keys only (anything else the untrusted process claims, a score for instance, is dropped).
TWO_STAGE = {
    "evo.tasks.mnist1d.harness:evaluate_source": (
        "evo.tasks.mnist1d.harness:export_source", "evo.tasks.mnist1d.trusted:score_export", (), ("exported",)),
    "evo.tasks.clrs.harness:evaluate_source": (
        "evo.tasks.clrs.harness:export_source", "evo.tasks.clrs.trusted:score_export",
        ("hidden_dim", "nb_triplet_fts"), ("exported",)),
}


def run_in_sandbox(entry: str, kwargs: dict, code: str, limits: SandboxLimits,
                   readonly_paths: Sequence[str] = (), scratch_root: str | None = None, *,
                   extra_pythonpath: Sequence[str] = (),
                   extra_env: Mapping[str, str | None] | None = None,
                   devices: Sequence[str] = (),
                   log_path: str | None = None,
                   cpus: Sequence[int] | None = None) -> SandboxResult:
    """Evaluate ``entry(code, **kwargs)`` in a fresh sandboxed process; never raises for
    anything the child does (only for a bad configuration on our side).

    An entry of ``TWO_STAGE`` is evaluated in two sandboxed processes instead: its untrusted entry on
    ``code`` (without ``readonly_paths``; on the CPU even for a GPU child, exporting for the child's platforms),
    then its trusted entry, which never runs child code, on what the
    first returned; the result is the trusted stage's (or the first stage's failure). ``wall_s`` is the sum,
    ``log_tail`` the end of both logs.
    """
    # Secrets of the search process (API keys in its environment, its memory, its open files): with the process
    # non-dumpable, /proc/<pid>/environ, mem and fd/ are refused to every process without CAP_SYS_PTRACE, and the
    # worker drops all capabilities before any child code runs (a root search's children would have it).
    set_non_dumpable()
    common = dict(scratch_root=scratch_root, extra_pythonpath=extra_pythonpath, extra_env=extra_env,
                  devices=devices, cpus=cpus)
    if entry not in TWO_STAGE:
        return _run_one(entry, kwargs, code, limits, readonly_paths, log_path=log_path, **common)
    untrusted, trusted, untrusted_keys, payload_keys = TWO_STAGE[entry]
    cache, _ = compile_cache_for(limits)  # made here, before any child code runs, so that it is never a child's
    first_kwargs = {k: kwargs[k] for k in untrusted_keys if k in kwargs}
    first_limits, first_common = limits, common
    jax_platforms = (extra_env or {}).get("JAX_PLATFORMS", "cpu")
    # None: a GPU slot removed it (evo.search.devices), so jax takes the GPU it finds there: an NVIDIA one, cuda
    platforms = ["cuda"] if jax_platforms is None else [p for p in jax_platforms.split(",") if p]
    if platforms != ["cpu"]:
        # A GPU child: the untrusted stage only builds and exports, so it runs on the CPU (no GPU device files, no
        # GPU in its environment, RLIMIT_AS back on) and exports for the platform the trusted stage trains on.
        first_kwargs["platforms"] = platforms
        first_env = {**(extra_env or {}), "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": "",
                     "XLA_PYTHON_CLIENT_MEM_FRACTION": None, "XLA_PYTHON_CLIENT_PREALLOCATE": None}
        first_common = {**common, "extra_env": first_env, "devices": ()}
        first_limits = replace(limits, address_space=True)
    first = _run_one(untrusted, first_kwargs, code, first_limits, (), log_path=log_path, **first_common)
    if first.status != outcome.OK:
        return first
    payload = {k: first.payload[k] for k in payload_keys if k in first.payload and k not in kwargs}
    trusted_common = common
    if cache:
        trusted_common = {**common, "extra_env": {**(extra_env or {}), **_compile_cache_env(cache)},
                          "writable": (cache,)}
    if TRUSTED_POOL:
        second = _run_pooled(trusted, {**kwargs, **payload}, limits, readonly_paths, log_path=log_path,
                             **trusted_common)
    else:
        second = _run_one(trusted, {**kwargs, **payload}, "", limits, readonly_paths,
                          log_path=log_path, append_log=True, **trusted_common)
    tail = "[untrusted stage]\n" + first.log_tail[-LOG_TAIL_CHARS // 2:] + "\n[trusted stage]\n" + second.log_tail
    return SandboxResult(status=second.status, reason=second.reason, payload=second.payload,
                         wall_s=first.wall_s + second.wall_s, log_tail=tail[-LOG_TAIL_CHARS:],
                         isolation=second.isolation + "+trusted-scoring", returncode=second.returncode)


def _run_one(entry: str, kwargs: dict, code: str, limits: SandboxLimits,
             readonly_paths: Sequence[str] = (), scratch_root: str | None = None, *,
             extra_pythonpath: Sequence[str] = (),
             extra_env: Mapping[str, str | None] | None = None,
             devices: Sequence[str] = (),
             log_path: str | None = None,
             append_log: bool = False,
             cpus: Sequence[int] | None = None,
             writable: Sequence[str] = ()) -> SandboxResult:
    """One sandboxed process: ``entry(code, **kwargs)`` (see run_in_sandbox).

    entry: "module:function" of trusted code importable in the child (evo, or a module
        on ``extra_pythonpath``); it returns a JSON-serialisable dict or raises
        ``evo.outcome.ChildFailure``. ``kwargs`` must be JSON-serialisable.
    readonly_paths: host files/folders the child may read (datasets), at the same path.
    scratch_root: where the private folder is made (default: the system temp dir).
    extra_pythonpath: folders put on the child's sys.path (and made readable).
    extra_env: added to / overriding the child's environment (value None removes a key),
        e.g. {"JAX_PLATFORMS": "cuda", "CUDA_VISIBLE_DEVICES": "0"} for a GPU child.
    devices: device nodes made available under bwrap (e.g. /dev/nvidia0, /dev/nvidiactl).
    log_path: keep the child's full log there (it is otherwise deleted with the folder).
    cpus: pin the child to these CPU indices (sched_setaffinity, before the entry is imported).
    writable: host folders it may also write (a trusted stage's compilation cache; never a child's).
    """
    for path in list(readonly_paths) + list(extra_pythonpath):
        if not os.path.exists(path):
            raise FileNotFoundError(f"evo.sandbox.runner: path for the child does not exist: {path}")
    use_bwrap = _use_bwrap(limits)
    isolation = describe_isolation(limits, use_bwrap)
    cgroup_ok = limits.cgroup and _cgroup_usable()
    pythonpath = [os.path.abspath(p) for p in extra_pythonpath]
    # an evo that is not pip-installed is found through its parent folder
    evo_parent = os.path.dirname(os.path.dirname(os.path.abspath(outcome.__file__)))
    pythonpath.append(evo_parent)

    nonce = secrets.token_hex(16)
    spec = {
        "nonce": nonce, "entry": entry, "kwargs": kwargs, "code": code, "pythonpath": pythonpath,
        "cpus": list(cpus) if cpus else None,
        "rlimits": {
            "as_bytes": (limits.memory_mb << 20) if limits.memory_mb and limits.address_space else None,
            "cpu_s": limits.cpu_limit_s(),
            "fsize_bytes": limits.max_file_mb << 20,
        },
    }
    private = tempfile.mkdtemp(prefix="evo-sbx-", dir=scratch_root)
    read_fd = write_fd = -1
    cgroup = None
    proc = None
    try:
        spec.update(_confinement(limits, use_bwrap, private, readonly_paths, extra_pythonpath, devices, writable))
        spec_bytes = json.dumps(spec, allow_nan=False).encode()  # TypeError/ValueError: caller's bug
        work, tmp = os.path.join(private, "work"), os.path.join(private, "tmp")
        os.mkdir(work, 0o700)
        os.mkdir(tmp, 0o700)
        log_file = log_path or os.path.join(private, "child.log")
        home, tmp_inside = (SANDBOX_HOME, "/tmp") if use_bwrap else (work, tmp)
        env = child_env(limits, home, tmp_inside, pythonpath, extra_env)

        read_fd, write_fd = os.pipe()
        argv = [sys.executable, "-s", "-m", "evo.sandbox.worker", "--result-fd", str(write_fd)]
        if use_bwrap:
            # evo_parent is on PYTHONPATH but not bound: only the evo package is visible
            ro = list(readonly_paths) + [os.path.abspath(p) for p in extra_pythonpath]
            argv = _bwrap_argv(shutil.which("bwrap"), private, limits.max_file_mb, ro,
                               devices, limits.scratch_mb, writable) + argv
        if cgroup_ok:
            try:
                cgroup = _make_cgroup(f"evo-sbx-{os.getpid()}-{nonce[:12]}", limits.memory_mb,
                                      limits.max_tasks)
                argv = cgroup.join_prefix() + argv
            except OSError as exc:
                log.warning("evo.sandbox.runner: no cgroup for this child (%s)", exc)
                isolation = isolation.replace("+cgroup(", "+no-cgroup(")
        start = time.monotonic()
        with open(log_file, "ab" if append_log else "wb") as logf:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=logf, stderr=logf,
                                    pass_fds=(write_fd,), close_fds=True, cwd=work, env=env,
                                    start_new_session=True)
        with _RUNNING_LOCK:
            _RUNNING[proc.pid] = (proc, cgroup)
            refused = _REFUSING
        if refused:
            _kill_tree(proc, cgroup)
        os.close(write_fd)
        write_fd = -1
        channel, timed_out = _talk(proc, spec_bytes, read_fd, start + limits.timeout_s)
        wall = time.monotonic() - start
        _kill_tree(proc, cgroup)
        rc = proc.returncode
        tail = _tail(log_file)
        result = _parse_channel(channel, nonce)
        oom = cgroup.oom_killed() if cgroup else False
        tasks_capped = cgroup.tasks_hit_cap() if cgroup else False
        if result is not None:
            status, reason, payload = result
            if oom and status == outcome.OK:
                reason = "note: the cgroup memory cap OOM-killed a process of the child"
            elif tasks_capped and status in outcome.FAILED:
                reason = f"{reason} (task cap of {limits.max_tasks} reached)"
        else:
            status, reason = _classify_failure(rc, timed_out, tail, use_bwrap, limits, oom,
                                               tasks_capped)
            payload = {}
        return SandboxResult(status=status, reason=reason, payload=payload, wall_s=wall,
                             log_tail=tail, isolation=isolation, returncode=rc)
    finally:
        if proc is not None:
            with _RUNNING_LOCK:
                _RUNNING.pop(proc.pid, None)
        for fd in (write_fd, read_fd):
            if fd >= 0:
                os.close(fd)
        if proc is not None and proc.returncode is None:
            _kill_tree(proc, cgroup)
        if cgroup is not None:
            cgroup.kill_all()
            cgroup.remove()
        _rmtree(private)


# ---------------------------------------------------------------- trusted-stage pool

# The trusted stage of a TWO_STAGE entry never runs child code, so its processes can be reused: a pool of
# long-lived sandboxed workers (``sandbox_worker --serve``) per configuration saves a process start and the jax
# imports per child. Each has the same sandbox, rlimits (the CPU-time cap given afresh to each request) and cgroup
# as a one-shot worker; one that times out, dies or runs out of memory is killed and
# replaced, and each retires after TRUSTED_MAX_REQUESTS requests. TRUSTED_POOL = False: a fresh process per child.
TRUSTED_POOL = True
TRUSTED_MAX_REQUESTS = 32
# A reused worker's address space grows past what one child needs (a CLRS child at experiment=clrs_demo's size:
# ~3.9 GB virtual after the first request, 4.2 GB at the third, against RLIMIT_AS = memory_mb = 4 GB, with ~2.2 GB
# resident). Where a cgroup caps the worker's resident memory at memory_mb (the cap that matters, and the same), its
# RLIMIT_AS is this factor larger; without one, RLIMIT_AS is the only cap and stays memory_mb.
TRUSTED_ADDRESS_FACTOR = 1.5
_POOL: dict[tuple, list["_TrustedServer"]] = {}
_POOL_LOCK = threading.Lock()
# PR_SET_PDEATHSIG (the worker) and bwrap --die-with-parent fire when the THREAD that started the process ends: one
# long-lived thread starts every server, so that a server outlives the worker thread that first needed it.
_SPAWNER: list = []


def _spawn(*args, **kwargs) -> subprocess.Popen:
    with _POOL_LOCK:
        if not _SPAWNER:

            _SPAWNER.append(ThreadPoolExecutor(1, thread_name_prefix="evo-trusted-spawner"))
        spawner = _SPAWNER[0]
    return spawner.submit(subprocess.Popen, *args, **kwargs).result()


class _TrustedServer:
    """One long-lived trusted worker (see TRUSTED_POOL)."""

    def __init__(self, limits: SandboxLimits, readonly_paths: Sequence[str], scratch_root: str | None,
                 extra_pythonpath: Sequence[str], extra_env, devices: Sequence[str], cpus, preload: list,
                 writable: Sequence[str] = ()):
        self.limits, self.requests, self.healthy = limits, 0, True
        self.use_bwrap = _use_bwrap(limits)
        self.isolation = describe_isolation(limits, self.use_bwrap)
        self.cgroup = None
        self.proc = None
        self.read_fd = -1
        self.private = tempfile.mkdtemp(prefix="evo-sbx-trusted-", dir=scratch_root)
        write_fd = -1
        try:
            work, tmp = os.path.join(self.private, "work"), os.path.join(self.private, "tmp")
            os.mkdir(work, 0o700)
            os.mkdir(tmp, 0o700)
            self.log_file = os.path.join(self.private, "trusted.log")
            pythonpath = [os.path.abspath(p) for p in extra_pythonpath]
            pythonpath.append(os.path.dirname(os.path.dirname(os.path.abspath(outcome.__file__))))
            home, tmp_inside = (SANDBOX_HOME, "/tmp") if self.use_bwrap else (work, tmp)
            env = child_env(limits, home, tmp_inside, pythonpath, extra_env)
            self.read_fd, write_fd = os.pipe()
            argv = [sys.executable, "-s", "-m", "evo.sandbox.worker", "--result-fd", str(write_fd), "--serve"]
            if self.use_bwrap:
                ro = list(readonly_paths) + [os.path.abspath(p) for p in extra_pythonpath]
                argv = _bwrap_argv(shutil.which("bwrap"), self.private, limits.max_file_mb, ro, devices,
                                   limits.scratch_mb, writable) + argv
            if limits.cgroup and _cgroup_usable():
                try:
                    self.cgroup = _make_cgroup(f"evo-sbx-{os.getpid()}-trusted-{secrets.token_hex(6)}",
                                               limits.memory_mb, limits.max_tasks)
                    argv = self.cgroup.join_prefix() + argv
                except OSError as exc:
                    log.warning("evo.sandbox.runner: no cgroup for a trusted worker (%s)", exc)
                    self.isolation = self.isolation.replace("+cgroup(", "+no-cgroup(")
            with open(self.log_file, "wb") as logf:
                self.proc = _spawn(argv, stdin=subprocess.PIPE, stdout=logf, stderr=logf, pass_fds=(write_fd,),
                                   close_fds=True, cwd=work, env=env, start_new_session=True)
            os.close(write_fd)
            write_fd = -1
            address_mb = limits.memory_mb
            if address_mb and self.cgroup is not None:
                address_mb = int(address_mb * TRUSTED_ADDRESS_FACTOR)   # see TRUSTED_ADDRESS_FACTOR
            setup = {"pythonpath": pythonpath, "cpus": list(cpus) if cpus else None, "preload": preload,
                     "rlimits": {"as_bytes": (address_mb << 20) if address_mb and limits.address_space
                                 else None, "fsize_bytes": limits.max_file_mb << 20,
                                 "cpu_s": limits.cpu_limit_s()}}  # per request (evo.sandbox.worker._cpu_budget)
            setup.update(_confinement(limits, self.use_bwrap, self.private, readonly_paths, extra_pythonpath,
                                      devices, writable))
            self.proc.stdin.write((json.dumps(setup) + "\n").encode())
            self.proc.stdin.flush()
        except BaseException:
            if write_fd >= 0:
                os.close(write_fd)
            self.close()
            raise

    def request(self, entry: str, kwargs: dict, log_path: str | None = None) -> SandboxResult:
        nonce = secrets.token_hex(16)
        line = (json.dumps({"nonce": nonce, "entry": entry, "kwargs": kwargs}, allow_nan=False) + "\n").encode()
        offset = os.path.getsize(self.log_file)
        start = time.monotonic()
        deadline = start + self.limits.timeout_s
        with _RUNNING_LOCK:
            _RUNNING[self.proc.pid] = (self.proc, self.cgroup)
            refused = _REFUSING
        buf, result, timed_out = bytearray(), None, False
        try:
            if refused:
                _kill_tree(self.proc, self.cgroup)
            try:
                self.proc.stdin.write(line)
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass  # it died: classified below
            while result is None and self.proc.poll() is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                ready, _, _ = select.select([self.read_fd], [], [], min(left, 0.05))
                if ready:
                    chunk = os.read(self.read_fd, 1 << 16)
                    if not chunk:
                        break
                    buf += chunk
                    if buf.endswith(b"\n"):
                        result = _parse_channel(bytes(buf), nonce)
            if result is None:  # what it wrote just before it died
                os.set_blocking(self.read_fd, False)
                try:
                    while chunk := os.read(self.read_fd, 1 << 16):
                        buf += chunk
                except (BlockingIOError, OSError):
                    pass
                os.set_blocking(self.read_fd, True)
                result = _parse_channel(bytes(buf), nonce)
                if result is None and not timed_out:
                    # its channel closes as it dies, a moment before bwrap or the worker exits: wait for that exit,
                    # whose status says how it died (SIGXCPU: the CPU cap), before the tree is killed
                    try:
                        self.proc.wait(timeout=_KILL_GRACE_S)
                    except subprocess.TimeoutExpired:
                        pass
        finally:
            with _RUNNING_LOCK:
                _RUNNING.pop(self.proc.pid, None)
        wall = time.monotonic() - start
        self.requests += 1
        oom = self.cgroup.oom_killed() if self.cgroup else False
        if result is None or oom or timed_out:
            self.healthy = False
            _kill_tree(self.proc, self.cgroup)
        text = _log_since(self.log_file, offset)
        if log_path:
            with open(log_path, "a", encoding="utf-8", errors="replace") as fh:
                fh.write(text)
        tail = text[-LOG_TAIL_CHARS:]
        if result is not None and not timed_out:
            status, reason, payload = result
            if status == outcome.MEMORY:
                self.healthy = False
        else:
            status, reason = _classify_failure(self.proc.returncode, timed_out, tail, self.use_bwrap, self.limits,
                                               oom, self.cgroup.tasks_hit_cap() if self.cgroup else False)
            payload = {}
        return SandboxResult(status=status, reason=reason, payload=payload, wall_s=wall, log_tail=tail,
                             isolation=self.isolation, returncode=self.proc.returncode)

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except (OSError, ValueError):
                pass
            _kill_tree(self.proc, self.cgroup)
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1
        if self.cgroup is not None:
            self.cgroup.kill_all()
            self.cgroup.remove()
            self.cgroup = None
        _rmtree(self.private)


def _log_since(path: str, offset: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(offset, os.path.getsize(path) - 4 * MAX_RESULT_BYTES))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


# Failures that what an earlier request left in a reused worker can cause (its address space grows: see
# TRUSTED_ADDRESS_FACTOR, which is not there without a cgroup): a pooled worker that fails so after serving others is
# replaced, and the request is run again on a fresh one, whose verdict is the child's, as a one-shot worker's would be.
_FRESH_RETRY = (outcome.MEMORY, outcome.CRASHED)


def _run_pooled(entry: str, kwargs: dict, limits: SandboxLimits, readonly_paths: Sequence[str], *,
                scratch_root=None, extra_pythonpath=(), extra_env=None, devices=(), cpus=None,
                log_path=None, writable=()) -> SandboxResult:
    """The trusted entry on a pooled server for this configuration (started if none is idle); see _FRESH_RETRY."""
    for path in list(readonly_paths) + list(extra_pythonpath):
        if not os.path.exists(path):
            raise FileNotFoundError(f"evo.sandbox.runner: path for the child does not exist: {path}")
    preload = [entry.partition(":")[0]]
    # os.getpid(): a forked copy of the search process never shares its parent's servers (and their pipes)
    key = (os.getpid(), limits, tuple(readonly_paths), scratch_root, tuple(extra_pythonpath),
           tuple(sorted((extra_env or {}).items())), tuple(devices), tuple(cpus or ()), tuple(preload),
           tuple(writable))
    server = None
    while server is None:
        with _POOL_LOCK:
            idle = _POOL.setdefault(key, [])
            server = idle.pop() if idle else None
        if server is None:
            break
        if server.proc.poll() is not None:  # died while idle (not this child's doing): replace it
            server.close()
            server = None
    def new_server():
        return _TrustedServer(limits, readonly_paths, scratch_root, extra_pythonpath, extra_env, devices, cpus,
                              preload, writable)

    server = server or new_server()
    while True:
        reused = server.requests > 0
        try:
            res = server.request(entry, kwargs, log_path)
        except BaseException:
            server.healthy = False
            raise
        finally:
            if server.healthy and server.requests < TRUSTED_MAX_REQUESTS:
                with _POOL_LOCK:
                    _POOL[key].append(server)
            else:
                server.close()
        if not (reused and res.status in _FRESH_RETRY):
            break
        log.info("evo.sandbox.runner: a reused trusted worker failed (%s); running the request again on a fresh "
                 "one", res.reason)
        server = new_server()
    res.isolation += "+trusted-pool"
    return res


def close_trusted_pool() -> int:
    """Stop every idle pooled trusted worker (also at exit); returns how many were stopped."""
    with _POOL_LOCK:
        servers = [s for idle in _POOL.values() for s in idle]
        _POOL.clear()
    for server in servers:
        server.close()
    return len(servers)


atexit.register(close_trusted_pool)


def kill_running() -> int:
    """Kill every sandboxed child of this process now, and every child started from now until
    ``allow_new()`` as soon as it starts (their callers then return a failure, which an interrupted
    search does not record). Returns how many were running."""
    global _REFUSING
    with _RUNNING_LOCK:
        _REFUSING = True
        running = list(_RUNNING.values())
    for proc, cgroup in running:
        _kill_tree(proc, cgroup)
    return len(running)


def allow_new() -> None:
    """Undo ``kill_running``'s refusal: children may run again (once the interrupted ones are done)."""
    global _REFUSING
    with _RUNNING_LOCK:
        _REFUSING = False


def _rmtree(path: str) -> None:
    """Delete the private folder, even where the child removed its own permissions."""
    def fix(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, 0o700)
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.unlink(p)
        except OSError:
            pass

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=fix)
    else:
        shutil.rmtree(path, onerror=fix)
    if os.path.exists(path):
        log.warning("evo.sandbox.runner: could not remove the private folder %s", path)


def _talk(proc: subprocess.Popen, spec: bytes, read_fd: int, deadline: float
          ) -> tuple[bytes, bool]:
    """Send the spec, collect the result channel until the process exits or the deadline."""
    os.set_blocking(read_fd, False)
    stdin_fd = proc.stdin.fileno()
    os.set_blocking(stdin_fd, False)
    sel = selectors.DefaultSelector()
    sel.register(read_fd, selectors.EVENT_READ, "result")
    sel.register(stdin_fd, selectors.EVENT_WRITE, "stdin")
    pidfd = None
    if hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(proc.pid)
            sel.register(pidfd, selectors.EVENT_READ, "exit")
        except OSError:
            pidfd = None
    buf = bytearray()
    pending = memoryview(spec)
    timed_out = False
    result_open = True

    def read_some() -> bool:
        """Read what is there now; False once the channel is at EOF."""
        nonlocal buf
        while True:
            try:
                chunk = os.read(read_fd, 1 << 16)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            buf += chunk
            if len(buf) > MAX_RESULT_BYTES:  # keep the end: the worker writes its line last
                del buf[: len(buf) - MAX_RESULT_BYTES]

    try:
        while proc.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for key, _ in sel.select(timeout=min(left, 0.05 if pidfd is None else left)):
                if key.data == "result":
                    if not read_some():
                        sel.unregister(read_fd)
                        result_open = False
                elif key.data == "stdin":
                    try:
                        pending = pending[os.write(stdin_fd, pending):]
                    except (BrokenPipeError, BlockingIOError) as exc:
                        if isinstance(exc, BrokenPipeError):
                            pending = pending[len(pending):]
                    if not pending:
                        sel.unregister(stdin_fd)
                        proc.stdin.close()
        if timed_out:
            _kill_tree(proc, None)
        if result_open:  # what the worker wrote just before it exited
            read_some()
    finally:
        sel.close()
        if pidfd is not None:
            os.close(pidfd)
        if proc.stdin and not proc.stdin.closed:
            try:
                proc.stdin.close()
            except OSError:
                pass
    return bytes(buf), timed_out


def _kill_tree(proc: subprocess.Popen, cgroup: _Cgroup | None) -> None:
    """SIGKILL the session's process group (bwrap: and with it the PID namespace)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if cgroup is not None:
        cgroup.kill_all()
    try:
        proc.wait(timeout=_KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        log.warning("evo.sandbox.runner: pid %d did not die after SIGKILL", proc.pid)


def _parse_channel(data: bytes, nonce: str) -> tuple[str, str, dict] | None:
    """The last line carrying the right nonce, with a valid status; None if there is none."""
    found = None
    for line in data.split(b"\n"):
        line = line.strip()
        if not line.startswith(b"{"):
            continue
        try:
            msg = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if not isinstance(msg, dict) or not isinstance(msg.get("nonce"), str):
            continue
        if not hmac.compare_digest(msg["nonce"].encode(), nonce.encode()):
            continue
        status, reason, payload = msg.get("status"), msg.get("reason", ""), msg.get("payload")
        if status != outcome.OK and status not in outcome.FAILED:
            continue
        if not isinstance(payload, dict):
            payload = {}
        found = (status, str(reason), payload if status == outcome.OK else {})
    return found


def _tail(path: str, chars: int = LOG_TAIL_CHARS) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 4 * chars))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return text[-chars:]


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return ""
    line = lines[-1]
    return line if len(line) <= 200 else line[:197] + "..."


def _classify_failure(rc: int | None, timed_out: bool, tail: str, use_bwrap: bool,
                      limits: SandboxLimits, oom_killed: bool, tasks_capped: bool
                      ) -> tuple[str, str]:
    """Status and reason when no valid result came back."""
    if timed_out:
        return outcome.TIMEOUT, f"wall-clock limit of {limits.timeout_s:g} s exceeded"
    sig = None
    if rc is not None and rc < 0:
        sig = -rc
    elif use_bwrap and rc is not None and rc > 128:  # bwrap reports a signal as 128+n
        sig = rc - 128
    last = _last_line(tail)
    if oom_killed:
        return outcome.MEMORY, f"killed by the memory cap of {limits.memory_mb} MB (cgroup OOM)"
    if sig == signal.SIGXCPU:
        return outcome.TIMEOUT, f"cpu limit of {limits.cpu_limit_s():g} s CPU time exceeded"
    if any(s in tail for s in OOM_SIGNATURES):
        what = next(s for s in OOM_SIGNATURES if s in tail)
        return outcome.MEMORY, f"out of memory ({what}): {last}"
    if sig == signal.SIGXFSZ:
        return outcome.CRASHED, f"file size limit of {limits.max_file_mb} MB exceeded (SIGXFSZ)"
    if tasks_capped:
        extra = f"; task cap of {limits.max_tasks} reached"
    else:
        extra = ""
    if sig is not None:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        how = f"killed by {name}"
    elif rc == 0:
        how = "exited with code 0"
    else:
        how = f"exited with code {rc}"
    detail = f": {last}" if last else ""
    return outcome.CRASHED, f"no valid result from the child; {how}{extra}{detail}"

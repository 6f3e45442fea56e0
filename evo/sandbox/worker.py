"""Child side of the sandbox: ``python -m evo.sandbox.worker --result-fd N``.

Started by :func:`evo.sandbox.runner.run_in_sandbox`, never by hand. Order matters, because the
generated code is untrusted:

1. read the whole spec (JSON, including the per-run nonce) from stdin and close stdin,
   using only the standard library and before anything untrusted is imported;
2. make the result fd non-inheritable, apply the resource limits, become a subreaper;
3. import the (trusted) entry function ``module:function`` and call ``fn(code, **kwargs)``:
   the untrusted code is loaded by the entry from here on;
4. map the outcome to a status (``ChildFailure`` -> its status, ``MemoryError`` and
   allocator errors -> MEMORY, anything else -> CRASHED "ExcType: message"), kill any
   processes the child left behind, write ONE JSON line carrying the nonce to the result
   fd, and leave with ``os._exit`` (untrusted non-daemon threads or atexit hooks cannot
   hold the process open).

stdout/stderr are the parent's log file (set up by the parent when it spawns us, so that
errors before this module even runs are logged too): the child's prints land there and
can never reach the result channel. Exit code 3 means the spec itself was unusable.
"""

from __future__ import annotations

import ctypes
import errno
import gc
import importlib
import json
import os
import resource
import signal
import sys
import traceback

# Out-of-memory signatures in exception messages and logs (also used by evo.sandbox.runner).
OOM_SIGNATURES = (
    "MemoryError",
    "std::bad_alloc",
    "RESOURCE_EXHAUSTED",
    "Out of memory",
    "out of memory",
    "Cannot allocate memory",
    "can't allocate memory",
    "Unable to allocate",
    "pthread_create() failed",  # XLA's thread pools when the address-space cap is hit
)

_MAX_REASON = 300


def _one_line(text: str, limit: int = _MAX_REASON) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def exception_outcome(exc: BaseException) -> tuple[str, str]:
    """(status, one-line reason) for an exception raised while evaluating a child.

    Task harnesses may use this too, so that an allocator failure they catch is still
    reported as MEMORY rather than CRASHED.
    """
    from evo import outcome  # evo is importable once the spec's pythonpath is on sys.path (main, serve)

    try:
        message = str(exc)
    except Exception:  # a hostile __str__
        message = "<unprintable>"
    if isinstance(exc, outcome.ChildFailure):
        status = getattr(exc, "status", None)
        reason = _one_line(getattr(exc, "reason", message))
        if status in outcome.FAILED:
            return status, reason
        # Only failure statuses may be raised: a ChildFailure("ok", ...) is not a result.
        shown = status.value if isinstance(status, outcome.Status) else status   # 'ok', not <Status.OK: 'ok'>
        return outcome.CRASHED, _one_line(f"ChildFailure with invalid status {shown!r}: {reason}")
    name = type(exc).__name__
    if isinstance(exc, MemoryError) or any(sig in message for sig in OOM_SIGNATURES):
        return outcome.MEMORY, _one_line(f"{name}: {message}" if message.strip() else name)
    return outcome.CRASHED, _one_line(f"{name}: {message}" if message.strip() else name)


def _set_rlimits(limits: dict) -> None:
    def cap(which: int, soft: int, hard: int | None = None) -> None:
        hard = soft if hard is None else hard
        old_soft, old_hard = resource.getrlimit(which)
        if old_hard != resource.RLIM_INFINITY:
            hard = min(hard, old_hard)
            soft = min(soft, hard)
        resource.setrlimit(which, (soft, hard))

    cap(resource.RLIMIT_CORE, 0)
    if limits.get("as_bytes"):
        cap(resource.RLIMIT_AS, int(limits["as_bytes"]))
    if limits.get("cpu_s"):
        soft = max(1, int(limits["cpu_s"] + 0.999))
        cap(resource.RLIMIT_CPU, soft, soft + 2)  # SIGXCPU at soft, SIGKILL 2 s later
    if limits.get("fsize_bytes"):
        cap(resource.RLIMIT_FSIZE, int(limits["fsize_bytes"]))


def _cpu_budget(cpu_s: float) -> None:
    """Give a pooled worker's next request ``cpu_s`` CPU seconds. RLIMIT_CPU counts the CPU time of the process since
    it started, so one limit set at start would be shared by all the requests a pooled worker serves (32 children of
    ~4 CPU s each reach a 130 s cap) and kill a child that used only its share. The soft limit moves to what has been
    used so far plus the cap (a soft limit may be raised up to the hard one without privilege); SIGXCPU at the soft
    limit ends the worker, as it would a one-shot one, and the runner reports TIMEOUT "cpu limit"."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(usage.ru_utime + usage.ru_stime + cpu_s + 0.999)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _prctl(option: int, arg: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(option, arg, 0, 0, 0)
    except Exception:
        pass


_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_CAPBSET_DROP = 24
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4


def set_non_dumpable() -> None:
    """PR_SET_DUMPABLE 0: /proc/<pid>/environ, mem, fd/ and ptrace of this process are refused to every other
    process of the same uid that lacks CAP_SYS_PTRACE (the search process and the trusted stage call it)."""
    _prctl(_PR_SET_DUMPABLE, 0)


def drop_capabilities() -> bool:
    """Drop every capability (bounding, ambient, effective, permitted, inheritable) and set no_new_privs, so
    that a child of a root search process cannot use CAP_SYS_PTRACE / CAP_DAC_* to read the non-dumpable
    search process or other children. True if /proc/self/status then shows no effective capability."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
        for cap in range(64):  # EINVAL past the kernel's last capability, EPERM without CAP_SETPCAP: both fine
            libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)

        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

        class Data(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                        ("inheritable", ctypes.c_uint32)]

        header = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3: two Data structs
        data = (Data * 2)()
        libc.capset(ctypes.byref(header), data)
    except Exception:
        pass
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16) == 0
    except (OSError, ValueError):
        pass
    return False


def apply_landlock(rules: dict) -> None:
    """Confine this process and everything it starts later (threads included: call it while single-threaded; ABI 7
    has no flag that reaches existing threads) with Landlock: every file access right is handled, and granted back
    only beneath ``rules["read"]`` (read, list, execute) and ``rules["write"]`` (all); all TCP is handled and none
    granted; signals and abstract unix sockets cannot leave the process tree. Raises if the kernel refuses: the
    parent reported the run as confined, so it must be."""
    import landlockpy  # trusted, standard library only; imported after the spec was read
    from landlockpy import AccessFS, Ruleset, Scope

    file_rights = (AccessFS.EXECUTE | AccessFS.WRITE_FILE | AccessFS.READ_FILE | AccessFS.TRUNCATE
                   | AccessFS.IOCTL_DEV)  # the only rights a rule on a file (not a folder) may carry
    abi_fs = landlockpy.fs_for_abi(landlockpy.abi_version())
    reading = AccessFS.READ_FILE | AccessFS.READ_DIR | AccessFS.EXECUTE
    with Ruleset(scoped=Scope.SIGNAL | Scope.ABSTRACT_UNIX_SOCKET) as ruleset:
        for rights, paths in ((reading, rules.get("read") or []), (abi_fs, rules.get("write") or [])):
            for path in paths:
                ruleset.allow_path(path, rights if os.path.isdir(path) else rights & file_rights)
        ruleset.restrict()


def deny_sockets() -> None:
    """seccomp: socket(2) fails with EPERM in this process and everything it starts later (call it while
    single-threaded, as apply_landlock), and so does io_uring_setup(2), whose IORING_OP_SOCKET would make one
    anyway. No UDP, no named or abstract unix socket, no netlink: what Landlock's ABI 7 does not cover. A child
    needs none (jax, Haiku and dm-clrs on the CPU open none; on a GPU not yet run: sandbox.seccomp=false
    turns it off); socketpair(2) stays, it reaches nobody. Raises if the kernel
    refuses: the parent reported the run as filtered, so it must be."""
    import pyseccomp  # third-party, and only where the filter is asked for; imported after the spec was read

    rules = pyseccomp.SyscallFilter(defaction=pyseccomp.ALLOW)  # sets no_new_privs, as seccomp requires
    for name in ("socket", "io_uring_setup"):
        rules.add_rule(pyseccomp.ERRNO(errno.EPERM), name)
    rules.load()


def confine(spec: dict) -> None:
    """The confinements the parent asked for (``spec["landlock"]``: apply_landlock; ``spec["no_sockets"]``:
    deny_sockets), while this process is still one thread, before any entry is imported. Raises RuntimeError naming
    the one the kernel refused: the parent reported the run as confined, so it must be."""
    for key, name, apply in (("landlock", "Landlock", lambda: apply_landlock(spec["landlock"])),
                             ("no_sockets", "the seccomp filter", deny_sockets)):
        if spec.get(key):
            try:
                apply()
            except Exception as exc:
                raise RuntimeError(f"could not apply {name} ({type(exc).__name__}: {exc}): refusing to run the "
                                   "entry") from exc


def _descendants(root: int) -> list[int]:
    """PIDs below ``root`` (we are a subreaper, so orphans of our children count too)."""
    parent_of: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
            # the command may contain spaces and parentheses: split after the last ')'
            fields = stat[stat.rindex(b")") + 2:].split()
            parent_of[int(name)] = int(fields[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = [], {root}
    while frontier:
        nxt = {pid for pid, ppid in parent_of.items() if ppid in frontier and pid not in found}
        found.extend(nxt)
        frontier = nxt
    return found


def _kill_leftovers() -> None:
    """SIGKILL everything the child started (best effort; the parent also kills the tree)."""
    me = os.getpid()
    for _ in range(5):
        pids = _descendants(me)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass


def _json_default(obj):
    if hasattr(obj, "tolist"):  # numpy / jax scalars and arrays
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _send(fd: int, nonce: str, status: str, reason: str, payload: dict) -> None:
    try:
        body = json.dumps({"nonce": nonce, "status": status, "reason": reason,
                           "payload": payload}, default=_json_default, allow_nan=True)
    except Exception as exc:  # unserialisable payload (or MemoryError while encoding)
        from evo import outcome  # evo is importable once the spec's pythonpath is on sys.path (main, serve)

        body = json.dumps({"nonce": nonce, "status": outcome.CRASHED, "payload": {},
                           "reason": _one_line(f"payload not JSON-serialisable: {exc}")})
    data = ("\n" + body + "\n").encode()
    # a leading newline: junk the child wrote without one cannot glue onto our line
    while data:
        data = data[os.write(fd, data):]


def _report(result_fd: int, nonce: str, status, reason: str, payload: dict) -> None:
    """End of one evaluation: flush the log, kill what the child left running, send the result."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    _kill_leftovers()
    _send(result_fd, nonce, status, reason, payload)


def serve(result_fd: int) -> int:
    """``--serve``: a long-lived TRUSTED worker (evo.sandbox.runner's pool for the trusted stage of TWO_STAGE entries;
    never used for an entry that runs child code). Line 1 on stdin: the setup (pythonpath, rlimits with cpu_s per
    request, cpus, preload, landlock); then one JSON request per line ({nonce, entry, kwargs}), answered on the result fd like a one-shot
    worker's result. EOF on stdin ends it. Requests run one at a time; jax's caches are cleared after each."""
    try:
        setup = json.loads(sys.stdin.buffer.readline().decode())
    except Exception as exc:
        print(f"sandbox_worker: bad setup on stdin: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    os.set_inheritable(result_fd, False)
    set_non_dumpable()  # holds the validation and test labels: no other process may read it
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    for path in reversed(setup.get("pythonpath") or []):
        if path not in sys.path:
            sys.path.insert(0, path)
    from evo import outcome  # the setup's pythonpath is on sys.path from here

    rlimits = dict(setup.get("rlimits") or {})
    cpu_per_request = rlimits.pop("cpu_s", None)  # RLIMIT_CPU counts a whole life: given per request below
    _set_rlimits(rlimits)
    if setup.get("cpus"):
        os.sched_setaffinity(0, setup["cpus"])
    if not drop_capabilities() and os.geteuid() == 0:
        print("sandbox_worker: could not drop the capabilities of a root worker", file=sys.stderr)
        return 3
    try:
        confine(setup)
    except RuntimeError as exc:
        print(f"sandbox_worker: {exc}", file=sys.stderr)
        return 3
    for module_name in setup.get("preload") or []:  # trusted modules, imported while nothing waits on us
        importlib.import_module(module_name)
    while True:
        line = sys.stdin.buffer.readline()
        if not line:
            return 0
        try:
            request = json.loads(line.decode())
            nonce, entry, kwargs = request["nonce"], request["entry"], request.get("kwargs") or {}
        except Exception as exc:
            print(f"sandbox_worker: bad request: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 3
        print(f"--- request {nonce[:8]}: {entry}", flush=True)
        if cpu_per_request:
            _cpu_budget(cpu_per_request)
        try:
            module_name, _, func_name = entry.partition(":")
            result = getattr(importlib.import_module(module_name), func_name)("", **kwargs)
            if result is None:
                result = {}
            if not isinstance(result, dict):
                raise TypeError(f"entry returned {type(result).__name__}, not dict")
            status, reason, payload = outcome.OK, "", result
        except BaseException as exc:  # noqa: BLE001
            status, reason = exception_outcome(exc)
            payload = {}
            if not isinstance(exc, outcome.ChildFailure):
                traceback.print_exc()
        _report(result_fd, nonce, status, reason, payload)
        if "jax" in sys.modules:  # compiled executables of the last model: free them
            sys.modules["jax"].clear_caches()
        gc.collect()


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "--result-fd" and argv[2] == "--serve":
        return serve(int(argv[1]))
    if len(argv) != 2 or argv[0] != "--result-fd":
        print("usage: python -m evo.sandbox.worker --result-fd N [--serve]", file=sys.stderr)
        return 3
    result_fd = int(argv[1])

    # 1. everything trusted comes from stdin, read to EOF before any untrusted import
    try:
        spec = json.loads(sys.stdin.buffer.read().decode())
        nonce = spec["nonce"]
        entry = spec["entry"]
        kwargs = spec.get("kwargs") or {}
        code = spec["code"]
    except Exception as exc:
        print(f"sandbox_worker: bad spec on stdin: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)

    # 2. protections that need to be in place before the child's code runs
    os.set_inheritable(result_fd, False)  # grandchildren must not get the channel
    set_non_dumpable()  # a trusted stage keeps it; an untrusted child could undo it, but only for itself
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # parent gone -> we go (no bwrap case)
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)  # orphaned grandchildren stay ours to kill
    for path in reversed(spec.get("pythonpath") or []):
        if path not in sys.path:
            sys.path.insert(0, path)
    from evo import outcome  # trusted, before the limits (its import is tiny anyway)

    status, reason, payload = outcome.CRASHED, "", {}
    try:
        _set_rlimits(spec.get("rlimits") or {})
        if spec.get("cpus"):
            # XLA:CPU sizes its thread pool by the affinity mask, and no flag limits it: pinning is
            # what makes a 1-thread child use 1 core (and train deterministically).
            os.sched_setaffinity(0, spec["cpus"])
        if not drop_capabilities() and os.geteuid() == 0:
            raise RuntimeError("could not drop the capabilities of a root worker: refusing to run the entry")
        confine(spec)  # before the entry's import: still one thread
        module_name, _, func_name = entry.partition(":")
        fn = getattr(importlib.import_module(module_name), func_name)
        # 3. the untrusted part
        result = fn(code, **kwargs)
        if result is None:
            result = {}
        if not isinstance(result, dict):
            raise TypeError(f"entry returned {type(result).__name__}, not dict")
        status, reason, payload = outcome.OK, "", result
    except BaseException as exc:  # noqa: BLE001 - SystemExit/KeyboardInterrupt from the child too
        try:
            status, reason = exception_outcome(exc)
            payload = {}
            if not isinstance(exc, outcome.ChildFailure):
                traceback.print_exc()
        except BaseException:  # noqa: BLE001
            status, reason, payload = outcome.CRASHED, "unreportable exception", {}

    # 4. report and leave
    try:
        _report(result_fd, nonce, status, reason, payload)
    except BaseException as exc:  # noqa: BLE001
        try:
            os.write(2, f"sandbox_worker: could not send the result: {exc!r}\n".encode())
        except OSError:
            pass
        os._exit(4)
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""evo.sandbox.runner: real subprocesses, no mocks.

The entry functions live in tests/sandbox_entries.py and reach the child through
``extra_pythonpath``. Tests that need bubblewrap are skipped (with the reason) where it is
missing or unusable; tests that need a cgroup likewise.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid

import pytest

from evo import outcome
from evo.sandbox.runner import (SandboxLimits, SandboxResult, _bwrap_usable, _cgroup_usable, allow_new,
                                describe_isolation, kill_running, run_in_sandbox)

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
BWRAP_OK, BWRAP_WHY = _bwrap_usable()
needs_bwrap = pytest.mark.skipif(not BWRAP_OK, reason=f"needs bubblewrap: {BWRAP_WHY}")
needs_cgroup = pytest.mark.skipif(not _cgroup_usable(),
                                  reason="needs a writable cgroup v1 memory+pids hierarchy (root)")
ISOLATIONS = [pytest.param("auto", id="auto"), pytest.param("none", id="none")]


def run(entry: str, kwargs: dict | None = None, code: str = "", **opts) -> SandboxResult:
    """run_in_sandbox on a test entry; SandboxLimits fields and call options mixed in opts."""
    limit_keys = {"timeout_s", "memory_mb", "cpu_s", "max_file_mb", "threads", "isolation",
                  "cgroup", "max_tasks", "scratch_mb", "landlock", "seccomp"}
    limits = SandboxLimits(**{"timeout_s": 30.0,
                              **{k: opts.pop(k) for k in list(opts) if k in limit_keys}})
    return run_in_sandbox(f"sandbox_entries:{entry}", kwargs or {}, code, limits,
                          extra_pythonpath=[TESTS_DIR], **opts)


def _pids_with_arg(marker: str) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as fh:
                    if marker.encode() in fh.read().split(b"\0"):
                        pids.append(int(name))
            except OSError:
                pass
    return pids


# ---------------------------------------------------------------- results and statuses

@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_normal_return_brings_the_payload_back(isolation):
    res = run("echo", {"lr": 0.01, "steps": [1, 2]}, code="x = 1", isolation=isolation)
    assert res.status == outcome.OK, res
    assert res.reason == ""
    assert res.payload["code"] == "x = 1"
    assert res.payload["kwargs"] == {"lr": 0.01, "steps": [1, 2]}
    assert "rlimits(" in res.isolation and res.wall_s > 0
    if isolation == "auto" and BWRAP_OK:
        assert res.isolation.startswith("bwrap(net,pid")
        assert res.payload["pid"] < 10  # its own PID namespace
    if isolation == "none":
        assert "bwrap" not in res.isolation


def test_child_failure_propagates_status_and_reason():
    res = run("fail", {"status": outcome.SHAPE_ERROR, "reason": "logits (8, 3), want (8, 10)"})
    assert res.status == outcome.SHAPE_ERROR
    assert res.reason == "logits (8, 3), want (8, 10)"
    assert res.payload == {}


def test_child_failure_cannot_claim_ok():
    res = run("fake_ok_failure")
    assert res.status == outcome.CRASHED
    assert "invalid status 'ok'" in res.reason


def test_exception_is_crashed_with_one_line_reason_and_log_tail():
    res = run("boom")
    assert res.status == outcome.CRASHED
    assert res.reason == "ValueError: bad multiline message"
    assert "about to fail" in res.log_tail and "Traceback" in res.log_tail


def test_missing_entry_module_is_crashed():
    res = run_in_sandbox("no_such_module_xyz:f", {}, "", SandboxLimits(timeout_s=30))
    assert res.status == outcome.CRASHED
    assert "ModuleNotFoundError" in res.reason


def test_kwargs_must_be_json():
    with pytest.raises(TypeError):
        run("echo", {"bad": object()})


# ---------------------------------------------------------------- limits

@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_infinite_loop_times_out(isolation):
    # How soon after the limit the child dies is measured, against a child that returns at once, by
    # benchmarks/sandbox_limits.py (a wall-clock bound here would fail on a loaded machine).
    res = run("spin", timeout_s=1.5, isolation=isolation)
    assert res.status == outcome.TIMEOUT
    assert "wall-clock limit of 1.5 s" in res.reason


def test_a_child_started_after_kill_running_is_killed_at_once():
    """An interrupted search kills its children; one a worker thread was still starting then must
    not train to its end while the search waits for that thread."""
    kill_running()
    try:
        res = run("spin", timeout_s=60)
        # Killed as it started, not at its 60 s limit (a timeout would say "wall-clock limit of 60 s").
        assert res.status == outcome.CRASHED and "killed by SIGKILL" in res.reason, res
    finally:
        allow_new()
    assert run("echo", {"x": 1}).status == outcome.OK   # after allow_new children run again


def test_sleeping_child_times_out_too():
    res = run("sleep_forever", timeout_s=1.0)
    assert res.status == outcome.TIMEOUT and res.wall_s < 4.0


def test_cpu_limit_is_timeout():
    res = run("spin", timeout_s=20, cpu_s=1)
    assert res.status == outcome.TIMEOUT
    assert "cpu limit" in res.reason
    assert res.wall_s < 10


@pytest.mark.slow   # burns a CPU budget twice
def test_a_pooled_trusted_worker_gives_each_request_its_own_cpu_budget():
    # the trusted stage of MNIST-1D and CLRS (where children train) runs on pooled workers: sandbox.cpu_s must cap
    # each request, not the worker's whole life (RLIMIT_CPU counts that)
    from evo.sandbox import runner

    limits = SandboxLimits(timeout_s=60, cpu_s=3)
    opts = dict(extra_pythonpath=[TESTS_DIR])
    try:
        first = runner._run_pooled("sandbox_entries:burn", {"cpu_s": 2.0}, limits, (), **opts)
        second = runner._run_pooled("sandbox_entries:burn", {"cpu_s": 2.0}, limits, (), **opts)
        assert first.status == second.status == outcome.OK, (first.reason, second.reason)
        assert second.payload["process_cpu_s"] > 3.5  # the same worker: 4 s in all, over one budget of 3
        spun = runner._run_pooled("sandbox_entries:spin", {}, limits, (), **opts)
        assert spun.status == outcome.TIMEOUT and "cpu limit" in spun.reason, spun.reason
        assert spun.wall_s < 30  # the CPU cap ended it, not the 60 s wall clock
    finally:
        runner.close_trusted_pool()


def test_a_reused_trusted_worker_that_runs_out_of_memory_is_replaced_and_the_request_run_again():
    # what earlier requests left in a pooled worker must not fail the next child: its request is run again on a fresh
    # worker, whose verdict stands (a request that fails there too fails, once)
    from evo.sandbox import runner

    # 1700 MB fit a fresh worker's address space (2048 MB, or 1.5x that under a cgroup: TRUSTED_ADDRESS_FACTOR), and
    # twice that fits neither
    limits = SandboxLimits(timeout_s=60, memory_mb=2048)
    opts = dict(extra_pythonpath=[TESTS_DIR])
    try:
        first = runner._run_pooled("sandbox_entries:grow", {"mb": 1700}, limits, (), **opts)
        assert first.status == outcome.OK and first.payload["kept_mb"] == 1700, first.reason
        second = runner._run_pooled("sandbox_entries:grow", {"mb": 1700}, limits, (), **opts)
        assert second.status == outcome.OK, second.reason
        assert second.payload["kept_mb"] == 1700 and second.payload["process"] != first.payload["process"]
        alone = runner._run_pooled("sandbox_entries:grow", {"mb": 5000}, limits, (), **opts)
        assert alone.status == outcome.MEMORY and "MemoryError" in alone.reason, alone.reason
    finally:
        runner.close_trusted_pool()


def test_a_trusted_worker_under_a_cgroup_gets_more_address_space_and_without_one_does_not():
    # virtual reservations grow in a reused trusted worker; where the cgroup caps its resident memory, RLIMIT_AS is
    # TRUSTED_ADDRESS_FACTOR x memory_mb (2500 MB of address space mapped, none of it resident)
    from evo.sandbox import runner

    if not runner._cgroup_usable():
        pytest.skip("no cgroup can be made here (needs root or a delegated cgroup v2 subtree)")
    opts = dict(extra_pythonpath=[TESTS_DIR])
    try:
        capped = runner._run_pooled("sandbox_entries:reserve", {"mb": 2500}, SandboxLimits(timeout_s=60, memory_mb=2048),
                                    (), **opts)
        assert capped.status == outcome.OK and "+cgroup(memory=2048MB" in capped.isolation, capped.reason
        alone = runner._run_pooled("sandbox_entries:reserve", {"mb": 2500},
                                   SandboxLimits(timeout_s=60, memory_mb=2048, cgroup=False), (), **opts)
        assert alone.status == outcome.MEMORY, alone.reason
    finally:
        runner.close_trusted_pool()


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_memory_hog_is_memory(isolation):
    res = run("hog", {"gb": 8}, memory_mb=1024, isolation=isolation)
    assert res.status == outcome.MEMORY, res
    assert "MemoryError" in res.reason
    assert res.wall_s < 15


def test_xla_allocation_over_the_cap_is_memory():
    code = ("import jax.numpy as jnp\n"
            "x = jnp.ones((1024, 1024, 1024), dtype=jnp.float32) + 1\n"
            "result = {'sum': float(x.sum())}\n")
    res = run("run_code", code=code, memory_mb=3072)
    assert res.status == outcome.MEMORY, res
    assert "RESOURCE_EXHAUSTED" in res.reason or "MemoryError" in res.reason


@needs_cgroup
def test_cgroup_caps_memory_of_the_whole_tree():
    # 4 processes x 400 MB: each is under the 1024 MB address-space cap, together they
    # are not; the cgroup OOM-kills some of them
    res = run("hog_in_processes", {"n": 4, "mb": 400}, memory_mb=1024)
    assert res.status == outcome.OK, res
    assert any(code == -9 for code in res.payload["exitcodes"]), res.payload
    assert "OOM" in res.reason


def test_file_size_limit():
    code = "open('big.bin', 'wb').write(b'x' * (3 << 20))\nresult = {'wrote': True}\n"
    res = run("run_code", code=code, max_file_mb=1)
    assert res.status == outcome.CRASHED
    assert "File too large" in res.reason or "file size" in res.reason


def test_jax_trains_under_the_default_caps():
    res = run("train_tiny_jax", {"steps": 20}, timeout_s=120)
    assert res.status == outcome.OK, res
    assert res.payload["backend"] == "cpu"
    assert res.payload["last_loss"] < res.payload["first_loss"]


# ---------------------------------------------------------------- process tree

@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_daemonised_grandchildren_are_dead_afterwards(isolation):
    marker = f"1000.{uuid.uuid4().int % 10**9}"  # `sleep 1000.NNN`, unique to this test
    res = run("spawn_daemon", {"marker": marker}, isolation=isolation)
    assert res.status == outcome.OK, res
    deadline = time.monotonic() + 2
    while _pids_with_arg(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _pids_with_arg(marker) == []


def test_daemon_dies_on_timeout_too():
    marker = f"1000.{uuid.uuid4().int % 10**9}"
    code = ("import subprocess, time\n"
            f"subprocess.Popen(['sleep', '{marker}'], start_new_session=True)\n"
            "while True: time.sleep(1)\n")
    res = run("run_code", code=code, timeout_s=1.5)
    assert res.status == outcome.TIMEOUT
    deadline = time.monotonic() + 2
    while _pids_with_arg(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _pids_with_arg(marker) == []


# ---------------------------------------------------------------- result channel

@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_forged_results_are_ignored(isolation):
    res = run("forge_then_fail", isolation=isolation)
    assert res.status == outcome.NAN and res.reason == "real failure"
    assert '"forged": true' in res.log_tail  # the print went to the log, not the channel

    res = run("forge_then_return", isolation=isolation)
    assert res.status == outcome.OK
    assert res.payload["real"] is True and "forged" not in res.payload
    assert res.payload["fds_written"]  # it did reach the channel fd, and still lost

    res = run("forge_then_exit", isolation=isolation)
    assert res.status == outcome.CRASHED
    assert "no valid result" in res.reason and res.payload == {}


# ---------------------------------------------------------------- isolation

@pytest.fixture
def tcp_server():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(0.2)
    got: list[bytes] = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    got.append(conn.recv(100))
                except OSError:
                    got.append(b"")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv.getsockname()[1], got
    stop.set()
    thread.join(2)
    srv.close()


@needs_bwrap
def test_no_network_under_bwrap(tcp_server):
    port, got = tcp_server
    res = run("connect", {"port": port})
    assert res.status == outcome.OK, res
    assert res.payload["connected"] is False, res.payload
    assert got == []


def test_network_control_without_bwrap(tcp_server):
    # the control for the test above (and for Landlock's, tests/test_sandbox_landlock.py): the server is reachable
    # from an unisolated child
    port, got = tcp_server
    res = run("connect", {"port": port}, isolation="none", landlock=False, seccomp=False)
    assert res.payload["connected"] is True, res.payload
    deadline = time.monotonic() + 5   # the server thread records what it received
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    assert got == [b"hello from the sandbox"]


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_environment_is_scrubbed(monkeypatch, isolation):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("WANDB_API_KEY", "secret")
    res = run("environment", isolation=isolation)
    env = res.payload["env"]
    for key in ("OPENAI_API_KEY", "HF_TOKEN", "WANDB_API_KEY"):
        assert key not in env
    assert "secret" not in repr(env)
    assert env["HOME"] == res.payload["cwd"]
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "1"
    assert env["TF_NUM_INTRAOP_THREADS"] == "1"
    assert "--xla_cpu_multi_thread_eigen=false" in env["XLA_FLAGS"]
    assert env["JAX_PLATFORMS"] == "cpu"
    assert {"PATH", "LANG", "HOME"} <= set(env)


def test_extra_env_and_threads():
    res = run_in_sandbox("sandbox_entries:environment", {}, "", SandboxLimits(timeout_s=30, threads=2),
                         extra_pythonpath=[TESTS_DIR],
                         extra_env={"JAX_PLATFORMS": "cuda", "EVO_FLAG": "1", "WANDB_MODE": None})
    env = res.payload["env"]
    assert env["JAX_PLATFORMS"] == "cuda" and env["EVO_FLAG"] == "1"
    assert "WANDB_MODE" not in env and "XLA_FLAGS" not in env
    assert env["OMP_NUM_THREADS"] == "2"


@needs_bwrap
def test_writes_outside_the_private_folder_fail(tmp_path):
    repo_file = os.path.join(TESTS_DIR, f"escape-{uuid.uuid4().hex}.txt")
    host_tmp_file = str(tmp_path / "escape.txt")
    package_file = os.path.join(os.path.dirname(outcome.__file__), f"escape-{uuid.uuid4().hex}.py")
    res = run("try_writes", {"paths": [repo_file, host_tmp_file, package_file, "/etc/escape"]})
    assert res.status == outcome.OK, res
    for path, what in res.payload["attempts"].items():
        assert what != "written", (path, what)
        assert not os.path.exists(path)
    assert res.payload["cwd"] == "/sandbox"


@needs_bwrap
def test_secrets_on_the_host_filesystem_are_invisible(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("key")
    res = run("read_file", {"path": str(secret)})
    assert res.status == outcome.CRASHED and "FileNotFoundError" in res.reason
    res = run("read_file", {"path": str(secret)}, readonly_paths=[str(secret)])
    assert res.status == outcome.OK and res.payload == {"size": 3}


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_private_folder_is_removed_and_log_can_be_kept(tmp_path, isolation):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    log_path = tmp_path / "child.log"
    res = run("try_writes", {"paths": []}, isolation=isolation, scratch_root=str(scratch),
              log_path=str(log_path))
    assert res.status == outcome.OK, res
    assert list(scratch.iterdir()) == []
    assert log_path.exists()


def test_describe_isolation_names_the_layers():
    text = describe_isolation(SandboxLimits(memory_mb=2048, timeout_s=60))
    assert "rlimits(as=2048MB,cpu=70s,fsize=64MB)" in text
    assert ("bwrap(" in text) == BWRAP_OK
    assert describe_isolation(SandboxLimits(isolation="none")).startswith("rlimits(")


def test_auto_without_bwrap_warns_and_falls_back(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no bwrap to be found
    with pytest.warns(RuntimeWarning, match="rlimits only"):
        res = run("echo", isolation="auto")
    assert res.status == outcome.OK and "bwrap" not in res.isolation
    with pytest.raises(RuntimeError, match="bwrap"):
        run("echo", isolation="bwrap")


# ---------------------------------------------------------------- resource storms

@needs_cgroup
@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_fork_storm_stops_at_the_task_cap_and_leaves_nothing(isolation):
    marker = f"1000.{uuid.uuid4().int % 10**9}"
    code = ("import subprocess\n"
            f"procs = [subprocess.Popen(['sleep', '{marker}']) for _ in range(400)]\n")
    res = run("run_code", code=code, isolation=isolation, max_tasks=64)
    assert res.status == outcome.CRASHED, res
    assert "task cap of 64 reached" in res.reason, res.reason
    deadline = time.monotonic() + 2
    while _pids_with_arg(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _pids_with_arg(marker) == []


STORM = """
import errno, os
out = {}
for where, size in (("/tmp/small", 1), ("/dev/shm", 1 << 20), ("/tmp", 1 << 20), (os.getcwd(), 1 << 20)):
    os.makedirs(where, exist_ok=True)
    n = 0
    try:
        while n < 100000:
            with open(os.path.join(where, f"f{n}"), "wb") as fh:
                fh.write(b"x" * size)
            n += 1
        out[where] = [n, None]
    except OSError as e:
        out[where] = [n, errno.errorcode.get(e.errno)]
result = out
"""


@needs_bwrap
def test_filling_shm_tmp_and_home_or_many_small_files_is_capped_and_leaves_nothing(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    res = run("run_code", code=STORM, max_file_mb=4, scratch_mb=8, scratch_root=str(scratch))
    assert res.status == outcome.OK, res
    out = res.payload
    assert out["/dev/shm"][1] == "ENOSPC" and out["/dev/shm"][0] <= 4, out  # tmpfs of max_file_mb
    assert out["/tmp"][1] == "ENOSPC" and out["/tmp"][0] <= 8, out  # tmpfs of scratch_mb
    home = next(k for k in out if k not in ("/dev/shm", "/tmp", "/tmp/small"))
    assert out[home][1] == "ENOSPC" and out[home][0] <= 8, out
    # many 1-byte files: each takes a page, so the 8 MB tmpfs stops them at about 2,000
    assert out["/tmp/small"][1] == "ENOSPC" and 100 < out["/tmp/small"][0] <= 8 * 256, out
    assert list(scratch.iterdir()) == []


# ---------------------------------------------------------------- cgroup v2

@pytest.fixture
def cgroup2_mount(tmp_path):
    """A cgroup v2 hierarchy mounted for the test (root only), unmounted afterwards."""
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a cgroup2 hierarchy needs root")
    point = tmp_path / "cgroup2"
    point.mkdir()
    proc = subprocess.run(["mount", "-t", "cgroup2", "none", str(point)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount cgroup2 here: {proc.stderr.strip()}")
    yield str(point)
    subprocess.run(["umount", "-l", str(point)], check=False)


def test_cgroup2_group_takes_the_tree_and_kills_it(cgroup2_mount):
    """The v2 code path on a real unified hierarchy: create, move a process tree in, cap, kill, remove."""
    import subprocess

    from evo.sandbox.runner import _Cgroup2

    group = _Cgroup2(cgroup2_mount, f"evo-sbx-test-{uuid.uuid4().hex[:8]}", memory_mb=256, max_tasks=16)
    proc = None
    try:
        # a shell in the group that starts a grandchild, as a worker would
        proc = subprocess.Popen(group.join_prefix() + ["/bin/sh", "-c", "sleep 600 & sleep 600"],
                                start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(os.path.join(group.path, "cgroup.procs")) as fh:
                members = fh.read().split()
            if len(members) >= 3:  # sh and its two sleeps
                break
            time.sleep(0.05)
        assert len(members) >= 3, members
        with open(f"/proc/{proc.pid}/cgroup") as fh:
            assert any(line.startswith("0::/") and group.path.endswith(line.strip()[4:]) for line in fh)
        group.kill_all()
        assert proc.wait(timeout=10) == -signal.SIGKILL
        with open(os.path.join(group.path, "cgroup.procs")) as fh:
            assert fh.read().split() == []
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        group.remove()
    assert not os.path.exists(group.path)


def test_cgroup2_group_caps_memory_and_tasks(cgroup2_mount):
    from evo.sandbox.runner import _Cgroup2

    group = _Cgroup2(cgroup2_mount, f"evo-sbx-test-{uuid.uuid4().hex[:8]}", memory_mb=256, max_tasks=16)
    try:
        if not {"memory", "pids"} <= group.controllers:
            pytest.skip("memory and pids are bound to cgroup v1 on this host (hybrid hierarchy), so a v2 group "
                        f"gets neither (controllers: {sorted(group.controllers) or 'none'}): the v2 caps cannot "
                        "be set here")
        with open(os.path.join(group.path, "memory.max")) as fh:
            assert int(fh.read()) == 256 << 20
        with open(os.path.join(group.path, "pids.max")) as fh:
            assert int(fh.read()) == 16
    finally:
        group.remove()

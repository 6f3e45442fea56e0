"""Landlock under ``isolation=none``: what a child may touch without bwrap (real subprocess sandbox, real kernel).

Each probe runs twice in the same child code: confined (the default, ``sandbox.landlock=true``) and, as the
control that shows the probe can succeed here, with ``landlock=False``. Skipped where the kernel has no Landlock.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile

import pytest

import evo
from evo import outcome
from evo.sandbox.runner import SandboxLimits, _landlock_abi, _seccomp_usable, describe_isolation, run_in_sandbox
from evo.tasks.mnist1d.data import make_splits, save_splits
from evo.tasks.mnist1d.harness import CHILD_ENV

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
pytestmark = pytest.mark.skipif(_landlock_abi() == 0, reason="the kernel has no Landlock (or landlockpy is missing)")

# The child tries each probe and reports ("allowed", value) or ("refused", exception name).
PROBES = '''
import json, os, socket
probes = json.loads(kwargs["probes"])
result = {}
def attempt(name, action):
    try:
        result[name] = ["allowed", action()]
    except Exception as exc:
        result[name] = ["refused", type(exc).__name__]
attempt("read_secret", lambda: open(probes["secret"]).read())
attempt("read_other_child", lambda: open(probes["other_child"]).read())
attempt("write_trusted_code", lambda: os.close(os.open(probes["trusted_code"], os.O_WRONLY | os.O_APPEND)))
attempt("tcp_connect", lambda: socket.create_connection(("127.0.0.1", probes["port"]), timeout=3).close())
attempt("signal_search_process", lambda: os.kill(probes["search_pid"], 0))
attempt("write_own_folder", lambda: open("own.txt", "w").write("ok"))
attempt("write_own_tmp", lambda: open(os.path.join(os.environ["TMPDIR"], "t"), "w").write("ok"))
attempt("read_evo", lambda: len(open(probes["trusted_code"]).read()) > 0)
attempt("write_dev_null", lambda: open("/dev/null", "w").write("x"))
def udp_send():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return s.sendto(b"hello over udp", ("127.0.0.1", probes["udp_port"]))
def unix_connect():
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(probes["unix_socket"])
        return s.send(b"hello over a named unix socket")
attempt("udp_send", udp_send)
attempt("unix_connect", unix_connect)
'''
CONFINED = ("read_secret", "read_other_child", "write_trusted_code", "tcp_connect", "signal_search_process")
# what Landlock's ABI 7 leaves open, and the seccomp filter (sandbox.seccomp) closes: a local service on UDP, or on a
# named unix socket (munge's, which signs SLURM requests as the search's user, is one)
NO_SOCKETS = ("udp_send", "unix_connect")
STILL_ALLOWED = ("write_own_folder", "write_own_tmp", "read_evo", "write_dev_null")


@pytest.fixture
def probes(tmp_path):
    home = tmp_path / "home"  # stands in for ~/.netrc: a file of the search's uid outside every allowed folder
    home.mkdir()
    (home / ".netrc").write_text("machine api.wandb.ai login user password sk-test-secret\n")
    other = tempfile.mkdtemp(prefix="evo-sbx-")  # another child's private folder, where run_in_sandbox makes them
    with open(os.path.join(other, "child.log"), "w") as fh:
        fh.write("another child's log\n")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(home / "service.sock"))
    unix.listen()
    yield {"secret": str(home / ".netrc"), "other_child": os.path.join(other, "child.log"),
           "trusted_code": os.path.join(os.path.dirname(os.path.abspath(evo.__file__)), "tasks", "mnist1d", "trusted.py"),
           "port": server.getsockname()[1], "search_pid": os.getpid(), "udp_port": udp.getsockname()[1],
           "unix_socket": str(home / "service.sock"), "udp": udp}
    server.close()
    udp.close()
    unix.close()
    os.remove(os.path.join(other, "child.log"))
    os.rmdir(other)


def run_probes(probes: dict, landlock: bool, seccomp: bool = True):
    sent = {k: v for k, v in probes.items() if k != "udp"}
    res = run_in_sandbox("sandbox_entries:run_code", {"probes": json.dumps(sent)}, PROBES,
                         SandboxLimits(timeout_s=60, isolation="none", landlock=landlock, seccomp=seccomp),
                         extra_pythonpath=[TESTS_DIR])
    assert res.status == outcome.OK, (res.reason, res.log_tail)
    return res


def received_udp(probes) -> bytes | None:
    probes["udp"].settimeout(2)
    try:
        return probes["udp"].recv(100)
    except OSError:
        return None


def test_a_confined_child_reaches_nothing_of_the_search_but_its_own_folder(probes):
    confined = run_probes(probes, landlock=True)
    assert "+landlock(abi=" in confined.isolation
    # the socket probes need the seccomp filter (libseccomp: scripts/setup.sh's image has it)
    assert ("+seccomp(no-sockets)" in confined.isolation) == _seccomp_usable()
    for name in CONFINED + (NO_SOCKETS if _seccomp_usable() else ()):
        assert confined.payload[name] == ["refused", "PermissionError"], (name, confined.payload)
    if _seccomp_usable():
        assert received_udp(probes) is None
    for name in STILL_ALLOWED:
        assert confined.payload[name][0] == "allowed", (name, confined.payload)


def test_control_the_same_child_without_landlock_reaches_all_of_it(probes):
    # what the confined test guards against, shown to succeed on this host (as root in CI: every file is open to it)
    free = run_probes(probes, landlock=False, seccomp=False)
    assert "landlock" not in free.isolation and "seccomp" not in free.isolation
    for name in CONFINED + NO_SOCKETS + STILL_ALLOWED:
        assert free.payload[name][0] == "allowed", (name, free.payload)
    assert "sk-test-secret" in free.payload["read_secret"][1]
    assert received_udp(probes) == b"hello over udp"


def test_control_landlock_alone_leaves_udp_and_named_unix_sockets_open(probes):
    # why sandbox.seccomp exists: with Landlock and no filter, the child reaches both local services
    landlocked = run_probes(probes, landlock=True, seccomp=False)
    assert landlocked.payload["tcp_connect"] == ["refused", "PermissionError"]
    for name in NO_SOCKETS:
        assert landlocked.payload[name][0] == "allowed", (name, landlocked.payload)
    assert received_udp(probes) == b"hello over udp"


def test_the_run_log_says_where_landlock_applies():
    assert "+landlock(abi=" in describe_isolation(SandboxLimits(isolation="none"))
    assert "landlock" not in describe_isolation(SandboxLimits(isolation="none", landlock=False))
    assert "landlock" not in describe_isolation(SandboxLimits(isolation="bwrap"), _bwrap=True)  # bwrap's root is read-only


def test_an_honest_mnist1d_child_trains_and_scores_confined(tmp_path):
    # both stages confined: the untrusted export (no data) and the pooled trusted scorer (the data file readable)
    data = str(tmp_path / "mnist1d.npz")
    save_splits(make_splits(), data)
    code = "import flax.linen as nn\n\nclass Model(nn.Module):\n    @nn.compact\n    def __call__(self, x):\n" \
           "        return nn.Dense(10)(x)\n"
    res = run_in_sandbox("evo.tasks.mnist1d.harness:evaluate_source",
                         {"data_path": data, "steps": 20, "eval_every": 10}, code,
                         SandboxLimits(timeout_s=300, isolation="none"), readonly_paths=[data], extra_env=CHILD_ENV)
    assert res.status == outcome.OK, (res.reason, res.log_tail)
    assert res.payload["num_params"] == 410
    assert "+landlock(abi=" in res.isolation and "trusted-pool" in res.isolation

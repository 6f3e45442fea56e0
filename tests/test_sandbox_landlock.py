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
from evo.sandbox.runner import SandboxLimits, _landlock_abi, describe_isolation, run_in_sandbox
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
'''
CONFINED = ("read_secret", "read_other_child", "write_trusted_code", "tcp_connect", "signal_search_process")
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
    yield {"secret": str(home / ".netrc"), "other_child": os.path.join(other, "child.log"),
           "trusted_code": os.path.join(os.path.dirname(os.path.abspath(evo.__file__)), "tasks", "mnist1d", "trusted.py"),
           "port": server.getsockname()[1], "search_pid": os.getpid()}
    server.close()
    os.remove(os.path.join(other, "child.log"))
    os.rmdir(other)


def run_probes(probes: dict, landlock: bool):
    res = run_in_sandbox("sandbox_entries:run_code", {"probes": json.dumps(probes)}, PROBES,
                         SandboxLimits(timeout_s=60, isolation="none", landlock=landlock), extra_pythonpath=[TESTS_DIR])
    assert res.status == outcome.OK, (res.reason, res.log_tail)
    return res


def test_a_confined_child_reaches_nothing_of_the_search_but_its_own_folder(probes):
    confined = run_probes(probes, landlock=True)
    assert "+landlock(abi=" in confined.isolation
    for name in CONFINED:
        assert confined.payload[name] == ["refused", "PermissionError"], (name, confined.payload)
    for name in STILL_ALLOWED:
        assert confined.payload[name][0] == "allowed", (name, confined.payload)


def test_control_the_same_child_without_landlock_reaches_all_of_it(probes):
    # what the confined test guards against, shown to succeed on this host (as root in CI: every file is open to it)
    free = run_probes(probes, landlock=False)
    assert "landlock" not in free.isolation
    for name in CONFINED + STILL_ALLOWED:
        assert free.payload[name][0] == "allowed", (name, free.payload)
    assert "sk-test-secret" in free.payload["read_secret"][1]


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

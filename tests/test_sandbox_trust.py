"""The trust boundary of a sandboxed evaluation: hostile MNIST-1D children, really sandboxed, in each isolation
mode available here (bwrap where usable, and none), cannot get a score they did not earn.

Each attack is a child program that builds a real 410-parameter model (one Dense layer) and, at import time, attacks
the evaluation from inside its own interpreter, as a program that got past the static checks can (the checks are a
filter, not the boundary: these children import sys and os directly; tests/attack_children.py writes them, for the
CLRS test too). Against the former single-process path (``harness:evaluate_in_child``: the child's code and the code
that measures it share one interpreter) the attacks do succeed; the tests show it once per attack, in the default
isolation mode, so that they are known to be real attacks. Against the path the search uses
(``harness:evaluate_source``: export in the sandboxed child, everything else in a fresh process that runs no child
Python) they get the honest score or a failure with a reason.

Real processes, real JAX (a few training steps), no mocks; about a minute in all.
"""

from __future__ import annotations

import os

import attack_children
import pytest

from evo import outcome
from evo.sandbox.runner import SandboxLimits, _bwrap_usable, run_in_sandbox
from evo.tasks.mnist1d.data import make_splits, save_splits
from evo.tasks.mnist1d.harness import CHILD_ENV

ENTRY = "evo.tasks.mnist1d.harness:evaluate_source"  # what the search runs: two processes
OLD_ENTRY = "evo.tasks.mnist1d.harness:evaluate_in_child"  # the former single-process path
TRAIN = {"steps": 20, "eval_every": 10}
HONEST_PARAMS = 410  # Dense(40 -> 10)
BWRAP_OK, BWRAP_WHY = _bwrap_usable()
MODES = [pytest.param("bwrap", id="bwrap", marks=pytest.mark.skipif(not BWRAP_OK, reason=f"needs bubblewrap: {BWRAP_WHY}")),
         pytest.param("none", id="none")]

MODEL = '''
class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(x)
'''
IMPORTS = "import flax.linen as nn"
FORGED = {"num_params": 1, "val_accuracy": 1.0, "test_accuracy": 1.0, "best_step": 1, "final_train_loss": 0.0,
          "compile_s": 0.0, "train_s": 1.0, "steps_per_s": 1.0, "device": "cpu"}
ATTACKS = {
    # the two forgeries on the result channel (stack walk to the nonce, a line to every fd), then leave
    **attack_children.forging_children(IMPORTS, FORGED, MODEL),
    # patch the trusted modules this interpreter can reach, then build the honest model
    "patch_trusted_modules": attack_children.patching_child(
        IMPORTS, FORGED, "mnist1d", "checks.check_model = lambda model, *a, **k: None", MODEL),
}


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("mnist1d") / "splits.npz"
    save_splits(make_splits(), path)
    return str(path)


def evaluate(code: str, data_path: str, isolation: str = "auto", entry: str = ENTRY):
    return run_in_sandbox(entry, {"data_path": data_path, **TRAIN}, code,
                          SandboxLimits(timeout_s=300, isolation=isolation), readonly_paths=[data_path],
                          extra_env=CHILD_ENV)


def earned_nothing(res) -> bool:
    """Failed with a reason, or scored honestly (the real parameter count, a real accuracy)."""
    if res.status != outcome.OK:
        return bool(res.reason)
    return res.payload["num_params"] == HONEST_PARAMS and res.payload["val_accuracy"] < 1.0


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attack_forges_a_score_on_the_former_single_process_path(attack, data_path):
    res = evaluate(ATTACKS[attack], data_path, entry=OLD_ENTRY)
    assert res.status == outcome.OK and res.payload["num_params"] == 1, (res.status, res.reason, res.payload)


@pytest.mark.parametrize("isolation", MODES)
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attack_gains_nothing(attack, isolation, data_path):
    res = evaluate(ATTACKS[attack], data_path, isolation)
    assert earned_nothing(res), (res.status, res.reason, res.payload)
    assert "trusted-scoring" in res.isolation
    if attack == "patch_trusted_modules":  # it builds a working model: the trusted stage scores it honestly
        assert res.status == outcome.OK and res.payload["num_params"] == HONEST_PARAMS
    else:  # it left before exporting anything: no modules, no score
        assert res.status == outcome.BUILD_ERROR and "exported" in res.reason


def test_honest_child_scores_the_same_on_both_paths(data_path):
    code = "import flax.linen as nn\n" + MODEL
    new, old = evaluate(code, data_path), evaluate(code, data_path, entry=OLD_ENTRY)
    assert new.status == old.status == outcome.OK, (new.reason, old.reason)
    for key in ("num_params", "val_accuracy", "test_accuracy", "final_train_loss"):
        assert new.payload[key] == old.payload[key], key
    assert new.payload["num_params"] == HONEST_PARAMS


def test_baked_in_weights_count_as_parameters(data_path):
    # A forward pass that multiplies by a fixed 40x100 matrix of constants (weights trained elsewhere, say):
    # the constants are model size like learned weights (less the small allowance for 0, 1, eps, ...).
    code = ("import flax.linen as nn\nimport jax.numpy as jnp\nimport numpy as np\n\n"
            "W = np.random.default_rng(0).standard_normal((40, 100)).astype(np.float32)\n\n"
            "class Model(nn.Module):\n    @nn.compact\n    def __call__(self, x):\n"
            "        return (x @ jnp.asarray(W))[:, :10] + nn.Dense(10)(x)\n")
    res = evaluate(code, data_path)
    assert res.status == outcome.OK, res.reason
    from evo.sandbox.exported import FREE_CONSTANTS

    assert res.payload["baked_constants"] >= 40 * 100 - FREE_CONSTANTS
    assert res.payload["num_params"] == HONEST_PARAMS + res.payload["baked_constants"]


@pytest.mark.parametrize("body", [
    # a host callback would run Python in the trusted process
    "return jax.pure_callback(lambda v: v, jax.ShapeDtypeStruct(x.shape[:1] + (10,), x.dtype), nn.Dense(10)(x))",
    # a native kernel named by a string
    "return jax.ffi.ffi_call('evil_kernel', jax.ShapeDtypeStruct(x.shape[:1] + (10,), x.dtype))(nn.Dense(10)(x))",
])
def test_children_that_would_leave_the_array_world_get_no_score(body, data_path):
    code = ("import jax\nimport flax.linen as nn\n\nclass Model(nn.Module):\n    @nn.compact\n"
            f"    def __call__(self, x):\n        {body}\n")
    res = evaluate(code, data_path)
    assert res.status in outcome.FAILED and res.reason, (res.status, res.reason)


def test_trusted_check_refuses_custom_calls_that_jax_was_told_to_allow():
    # A child controls its own export: it can switch jax's export safety check off. The trusted stage's own
    # module check (evo.sandbox.exported.inspect_modules) is what refuses the module then.
    import jax
    import jax.numpy as jnp
    from jax import export

    from evo.sandbox.exported import deserialize, encode, inspect_modules
    from evo.outcome import ChildFailure

    def forward(x):
        return jax.ffi.ffi_call("evil_kernel", jax.ShapeDtypeStruct(x.shape, x.dtype))(x)

    exp = export.export(jax.jit(forward), disabled_checks=[export.DisabledSafetyCheck.custom_call("evil_kernel")])(
        jax.ShapeDtypeStruct((4, 40), jnp.float32))
    module = deserialize(encode(exp.serialize()), "apply")
    with pytest.raises(ChildFailure) as info:
        inspect_modules({"apply": module}, "cpu")
    assert info.value.status == outcome.BUILD_ERROR and "'evil_kernel'" in info.value.reason
    clean = export.export(jax.jit(lambda x: x * 2.0))(jax.ShapeDtypeStruct((4, 40), jnp.float32))
    assert inspect_modules({"apply": clean}, "cpu").baked_parameters == 0
    with pytest.raises(ChildFailure, match="not valid base64|could not be read"):
        deserialize("not a module", "apply")


@pytest.mark.slow   # waits out a 12 s timeout, then trains twice
def test_a_module_that_never_finishes_times_out_and_its_trusted_worker_is_replaced(data_path):
    from evo.sandbox import runner as sandbox

    # the forward pass is a billion-step loop: the export is instant, running it in the trusted stage is not
    hang = ("import jax\nimport flax.linen as nn\n\nclass Model(nn.Module):\n    @nn.compact\n"
            "    def __call__(self, x):\n"
            "        x = jax.lax.fori_loop(0, 10**9, lambda i, v: v * 1.0000001, x)\n"
            "        return nn.Dense(10)(x)\n")
    limits = SandboxLimits(timeout_s=12)   # the export and a reused trusted worker's import take a few seconds
    res = run_in_sandbox(ENTRY, {"data_path": data_path, **TRAIN}, hang, limits, readonly_paths=[data_path],
                         extra_env=CHILD_ENV)
    assert res.status == outcome.TIMEOUT, (res.status, res.reason)
    assert "trusted-pool" in res.isolation
    assert all(s.proc.poll() is None for idle in sandbox._POOL.values() for s in idle)  # the hung one is gone
    code = "import flax.linen as nn\n" + MODEL
    first = run_in_sandbox(ENTRY, {"data_path": data_path, **TRAIN}, code, limits, readonly_paths=[data_path],
                           extra_env=CHILD_ENV)
    again = run_in_sandbox(ENTRY, {"data_path": data_path, **TRAIN}, code, limits, readonly_paths=[data_path],
                           extra_env=CHILD_ENV)
    assert first.status == again.status == outcome.OK, (first.reason, again.reason)
    assert first.payload["val_accuracy"] == again.payload["val_accuracy"]  # a reused worker scores the same
    assert sandbox.close_trusted_pool() >= 1


@pytest.mark.skipif(not BWRAP_OK, reason=f"needs bubblewrap: {BWRAP_WHY}")
def test_child_can_neither_write_the_trusted_code_nor_read_the_labels_under_bwrap(data_path):
    import evo

    package = os.path.dirname(os.path.abspath(evo.__file__))
    targets = [os.path.join(package, f) for f in ("sandbox/worker.py", "sandbox/exported.py", "tasks/mnist1d/trusted.py")]
    code = ("import os\nimport flax.linen as nn\n"
            f"for path in {targets!r}:\n"
            "    try:\n        os.close(os.open(path, os.O_WRONLY | os.O_APPEND))\n        print('WRITABLE', path)\n"
            "    except OSError as e:\n        print('refused', path, type(e).__name__)\n"
            f"print('DATA VISIBLE' if os.path.exists({data_path!r}) else 'data hidden')\n" + MODEL)
    res = evaluate(code, data_path, "bwrap")
    assert res.status == outcome.OK, res.reason
    assert "WRITABLE" not in res.log_tail and res.log_tail.count("refused") == len(targets), res.log_tail
    assert "data hidden" in res.log_tail and "DATA VISIBLE" not in res.log_tail


# ---------------------------------------------------------------- secrets of the search process

# A child that hunts for the secret: every process's environment, memory and command line it can open.
SECRET_HUNTER = '''
import os
found, opened = [], {"environ": 0, "mem": 0}
secret = kwargs["secret"].encode()
for pid in os.listdir("/proc"):
    if not pid.isdigit() or int(pid) == os.getpid():
        continue
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            opened["environ"] += 1
            if secret in fh.read():
                found.append(("environ", int(pid)))
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb") as mem:
            opened["mem"] += 1
            for line in maps:
                lo, hi = (int(v, 16) for v in line.split()[0].split("-"))
                if "rw" not in line.split()[1] or hi - lo > 1 << 28:
                    continue
                try:
                    mem.seek(lo)
                    if secret in mem.read(hi - lo):
                        found.append(("mem", int(pid)))
                        break
                except (OSError, ValueError, OverflowError):
                    pass
    except OSError:
        pass
result = {"found": found, "opened": opened, "ppid": os.getppid()}
'''
# The search process: its environment holds the secret from the start (what /proc shows is the initial block).
SEARCH = '''
import json, sys
from evo.sandbox.runner import SandboxLimits, run_in_sandbox
res = run_in_sandbox("sandbox_entries:run_code", {"secret": sys.argv[2]}, sys.argv[3],
                     SandboxLimits(timeout_s=120, isolation=sys.argv[1]), extra_pythonpath=[sys.argv[4]])
print(json.dumps({"status": res.status, "reason": res.reason, "payload": res.payload, "isolation": res.isolation}))
'''


@pytest.mark.slow
@pytest.mark.parametrize("isolation", MODES)
def test_child_cannot_read_a_secret_of_the_search_process(isolation, tmp_path):
    import json
    import secrets
    import subprocess
    import sys

    secret = "sk-evo-test-" + secrets.token_hex(16)
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(tests_dir)   # this checkout's evo, whatever is installed (it runs in tmp_path)
    env = {**os.environ, "OPENAI_API_KEY": secret, "WANDB_API_KEY": secret,
           "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", SEARCH, isolation, secret, SECRET_HUNTER, tests_dir],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["status"] == outcome.OK, res
    assert res["payload"]["found"] == [], res  # not in any environment or memory the child could open
    assert "nondumpable-parent,no-caps" in res["isolation"]

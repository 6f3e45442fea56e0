"""The trust boundary for CLRS children: hostile triplet functions, really sandboxed, cannot get a score they did not
earn; honest ones score exactly as on the former single-process path.

As tests/test_sandbox_trust.py does for MNIST-1D, with the same attack children (tests/attack_children.py): each
attack child passes nothing through the static checks (it imports sys and os outright) and attacks the evaluation
from inside its own interpreter at import time. Against the former single-process path
(``harness:evaluate_in_child``) the forged results are accepted (shown for the two attacks that need no training);
against the path the search uses (``harness:evaluate_source``, two processes: export in the child's, dm-clrs
training and scoring in one that runs no child Python) they get the honest score or a failure with a reason.

Real processes, real dm-clrs (tiny BFS: 5-node graphs, hidden 16, 2 training steps), no mocks. Most of the time is
XLA compiling the honest seed's training step on both paths.
"""

from __future__ import annotations

from pathlib import Path

from evo.tasks.clrs.harness import CHILD_ENV  # light: dm-clrs and jax are imported lazily

import attack_children  # noqa: E402
from conftest import second_mode_slow  # noqa: E402
import pytest  # noqa: E402

from evo import outcome  # noqa: E402
from evo.sandbox.runner import SandboxLimits, _bwrap_usable, run_in_sandbox  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ENTRY = "evo.tasks.clrs.harness:evaluate_source"        # what the search runs: two processes
OLD_ENTRY = "evo.tasks.clrs.harness:evaluate_in_child"  # the former single-process path
HIDDEN = 16
TRAIN = {"steps": 2, "batch_size": 4, "eval_batch_size": 8, "hidden_dim": HIDDEN, "eval_every": 2,
         "nb_triplet_fts": 8, "use_ln": True}
BWRAP_OK, BWRAP_WHY = _bwrap_usable()
MODES = [pytest.param("bwrap", id="bwrap", marks=pytest.mark.skipif(not BWRAP_OK, reason=f"needs bubblewrap: {BWRAP_WHY}")),
         pytest.param("none", id="none")]
SLOW_NONE = second_mode_slow(MODES, BWRAP_OK)   # the fast tier: bwrap where it works, else none
V1 = (REPO / "seeds" / "clrs" / "v1.py").read_text()
# One linear layer over the edge features: (16 + 1) x 16 parameters in the triplet function.
TRIPLET = '''
def get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):
    return hk.Linear(out_size)(edge_fts)
'''
IMPORTS = "import haiku as hk\nimport jax\nimport jax.numpy as jnp"
FORGED = {"num_params": 1, "val_accuracy": 1.0, "test_accuracy": 1.0, "best_step": 1, "train_s": 1.0,
          "compile_s": 0.0, "eval_s": 0.0, "init_s": 0.0, "s_per_step": 0.0, "test_s": 0.0, "device": "cpu"}
# the two forgeries on the result channel (stack walk to the nonce, a line to every fd), then leave
ATTACKS = attack_children.forging_children(IMPORTS, FORGED, TRIPLET)
# patch every trusted module this interpreter can reach: the worker's reporting, dm-clrs's parameter count, the
# checks, the trusted scorer and its module check; the function itself is honest
PATCHER = attack_children.patching_child(IMPORTS, FORGED, "clrs", """
train.train_and_evaluate = lambda *a, **k: dict(FORGED, history=[])
checks.check_triplet_fn = lambda *a, **k: None
""", TRIPLET)


@pytest.fixture(scope="module")
def clrs_data(tmp_path_factory):
    """Tiny BFS pools on disk (dm-clrs's sampler, in this process) and the harness keyword arguments."""
    from evo.tasks.clrs import data

    folder = tmp_path_factory.mktemp("clrs_trust")
    names = {}
    for split, length, num, seed in (("train", 5, 16, 5), ("val", 5, 8, 1005), ("test", 8, 8, 2008)):
        names[split] = data.pool_name("bfs", split, length, num, seed)
        data.save(data.generate("bfs", split, length, num, seed), folder, names[split])
    return {"data_dir": str(folder), "train_pools": [names["train"]], "val_pool": names["val"],
            "test_pool": names["test"], **TRAIN}


def evaluate(code: str, kwargs: dict, isolation: str = "auto", entry: str = ENTRY):
    return run_in_sandbox(entry, kwargs, code, SandboxLimits(timeout_s=600, isolation=isolation),
                          readonly_paths=[kwargs["data_dir"]], extra_env=CHILD_ENV)


@pytest.mark.parametrize("attack", [a if i == 0 else pytest.param(a, marks=pytest.mark.slow)   # one in the fast tier
                                    for i, a in enumerate(sorted(ATTACKS))])
def test_attack_forges_a_score_on_the_former_single_process_path(attack, clrs_data):
    res = evaluate(ATTACKS[attack], clrs_data, entry=OLD_ENTRY)
    assert res.status == outcome.OK and res.payload["num_params"] == 1, (res.status, res.reason, res.payload)


@pytest.mark.parametrize("isolation", SLOW_NONE)
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attack_gains_nothing(attack, isolation, clrs_data):
    # it left before exporting anything: no modules, no score (its forged payload never reaches the trusted stage)
    res = evaluate(ATTACKS[attack], clrs_data, isolation)
    assert res.status == outcome.BUILD_ERROR and "exported" in res.reason, (res.status, res.reason, res.payload)
    assert "trusted-scoring" in res.isolation


@pytest.mark.slow   # three CLRS trainings (~1 min): the whole suite runs it, the fast tier's attacks stop before training
def test_honest_child_scores_the_same_on_both_paths_and_patching_the_trusted_modules_gains_nothing(clrs_data):
    """The v1 seed (Triplet-GMPNN) on both paths: the same parameter count, bit-identical scores and training
    losses (the trusted stage draws the child's random keys from dm-clrs's key sequence, so even the initial
    parameters are the same). Then a child that patches every trusted module it can reach before exporting an
    honest function: the trusted stage scores it honestly."""
    new, old = evaluate(V1, clrs_data), evaluate(V1, clrs_data, entry=OLD_ENTRY)
    assert new.status == old.status == outcome.OK, (new.reason, old.reason)
    for key in ("num_params", "val_accuracy", "test_accuracy", "best_step"):
        assert new.payload[key] == old.payload[key], key
    assert new.payload["baked_constants"] == 0 and "trusted-scoring" in new.isolation
    patched = evaluate(PATCHER, {**clrs_data, "steps": 0})  # scored at initialisation: no training step to compile
    assert patched.status == outcome.OK, patched.reason
    assert patched.payload["num_params"] > 1000  # dm-clrs's own layers alone hold thousands
    assert patched.payload["val_accuracy"] < 1.0 and patched.payload["train_s"] != 1.0


# Each of these functions is honest when called on arrays (so it passes the pre-training check in its own process)
# and leaves the array world only when traced for export.
LEAVING = {
    # a host callback would run Python in the trusted process (jax cannot even serialize one)
    "host_callback": "jax.pure_callback(lambda v: v, jax.ShapeDtypeStruct(edge_fts.shape, edge_fts.dtype), msgs)",
    # a native kernel named by a string, with jax's export safety check switched off by the child
    # (on a stop_gradient'ed input: jax.vjp, which the export runs, would refuse to differentiate it)
    "ffi_call": "msgs + jax.ffi.ffi_call('evil_kernel', jax.ShapeDtypeStruct(edge_fts.shape, edge_fts.dtype))("
                "jax.lax.stop_gradient(msgs))",
}


@pytest.mark.parametrize("name", sorted(LEAVING))
def test_children_that_would_leave_the_array_world_get_no_score(name, clrs_data):
    code = ("import haiku as hk\nimport jax\nimport jax.numpy as jnp\nfrom jax import export\n\n"
            "real_export = export.export\n"
            "export.export = lambda f, **kw: real_export(f, disabled_checks=[\n"
            "    export.DisabledSafetyCheck.custom_call('evil_kernel')], **kw)\n\n"
            "def get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):\n"
            "    msgs = hk.Linear(out_size)(edge_fts)\n"
            "    if not isinstance(edge_fts, jax.core.Tracer):\n"
            "        return msgs\n"
            f"    return {LEAVING[name]}\n")
    res = evaluate(code, clrs_data)
    assert res.status == outcome.BUILD_ERROR and res.reason, (res.status, res.reason)
    if name == "ffi_call":  # exported by the child, refused by the trusted stage's own check, before any training
        assert "'evil_kernel'" in res.reason and "only pure array computations" in res.reason, res.reason
        assert "[trusted stage]" in res.log_tail


def test_a_baked_table_counts_as_parameters():
    """A triplet function that multiplies by a fixed 64 x 64 table of constants (weights fitted elsewhere, say):
    the table is model size like learned weights (less the small allowance for 0, 1, eps, ...)."""
    from evo.sandbox.exported import FREE_CONSTANTS
    from evo.tasks.clrs.harness import export_source
    from evo.tasks.clrs.trusted import load_triplet_fn

    baked = ("import haiku as hk\nimport jax\nimport jax.numpy as jnp\nimport numpy as np\n\n"
             "W = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)\n\n"
             "def get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):\n"
             "    return hk.Linear(out_size)(edge_fts) + edge_fts @ jnp.asarray(W)[:out_size, :out_size]\n")
    for code, at_least in ((baked, 64 * 64 - FREE_CONSTANTS), (V1, 0)):
        fn, counted = load_triplet_fn(export_source(code, HIDDEN, 8)["exported"], HIDDEN, 8, "cpu")
        assert counted >= at_least
        if code is V1:
            assert counted == 0

"""CLRS task: the nine seeds train, v1 is dm-clrs's Triplet-GMPNN (same size), and broken or hostile
triplet functions get a clear status through the real sandbox path.

Real dm-clrs models on tiny BFS (5-node graphs, hidden 16) on the CPU. Most of the time is XLA
compiling each seed's training step (~20-25 s a seed); about 5 minutes in all on 1 core.
"""

from __future__ import annotations

import ast
import json
import math
import os
import subprocess
import sys
from pathlib import Path

from evo.tasks.clrs.harness import CHILD_ENV  # light: dm-clrs and jax are imported lazily

# The sandboxed child's single-threaded settings (effective only for what is not imported/set yet).
for _key, _value in CHILD_ENV.items():
    os.environ.setdefault(_key, _value)

import pytest  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from evo.config import compose_config  # noqa: E402
from evo import outcome  # noqa: E402
from evo.outcome import ChildFailure  # noqa: E402
from evo.search.program import check_static  # noqa: E402
from evo.tasks.clrs.task import PRELUDE, PREFILL  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SEEDS = sorted((REPO / "seeds" / "clrs").glob("v*.py"), key=lambda p: int(p.stem[1:]))
HIDDEN, NB_TRIPLET_FTS = 16, 8
# The CLRS setting of tests/test_clrs_search.py: BFS on 5-node graphs, hidden 16, 4 training steps.
TINY_CLRS = ("task=clrs", "task.algorithm=bfs", "task.train_lengths=[5]", "task.train_samples=16", "task.val_length=5",
             "task.val_samples=8", "task.test_length=8", "task.test_samples=8", "task.train_steps=4",
             "task.batch_size=4", "task.eval_batch_size=8", f"task.hidden_dim={HIDDEN}", "task.eval_every=2")
HEAD = PRELUDE + "\n\n\ndef get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):\n"
# dm-clrs Triplet-GMPNN on BFS at run.py's settings (hidden 128, 8 triplet features): the model size
# of the paper's BFS baseline (EvoPrompting, Chen et al. 2023, CLRS table).
PAPER_BFS_PARAMS = 523963


# ---------------------------------------------------------------- shared data


@pytest.fixture(scope="module")
def pools():
    """A tiny BFS training and validation pool, generated in this process by dm-clrs's sampler."""
    from evo.tasks.clrs import data
    return {"train": data.generate("bfs", "train", 5, 16, seed=5), "val": data.generate("bfs", "val", 5, 8, seed=1005)}


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    """The composed tiny CLRS config, its task and its prepared data (generated once, by the task's own
    subprocess) in a cache folder shared by this module's sandbox and command-line tests."""
    cache = tmp_path_factory.mktemp("clrs_cache")
    cfg = compose_config([f"cache_dir={cache}", f"run_dir={cache / 'run'}", *TINY_CLRS])
    task = instantiate(cfg.task)
    return cfg, task, task.prepare(cache)


def init_params(factory, pool, hidden_dim: int):
    """Initialise dm-clrs's BaselineModel (run.py settings) with ``factory``'s processor; return params."""
    from evo.tasks.clrs.train import TrainBatches, build_model
    first = TrainBatches([pool], 4, seed=0).batch(0)
    model = build_model(factory, pool.spec, first, hidden_dim=hidden_dim)
    model.init(first.features, 1)
    return model.params


# ---------------------------------------------------------------- the nine seeds


def test_there_are_the_papers_nine_seeds_in_v1_style():
    assert [p.stem for p in SEEDS] == [f"v{i}" for i in range(1, 10)]
    for path in SEEDS:
        code = path.read_text()
        doc = ast.get_docstring(ast.parse(code))
        assert doc and doc.startswith(f"{path.stem}: "), path.name
        rest = code[code.index('"""', 3) + 4:]   # after the module docstring
        assert rest.startswith(PRELUDE + "\n\n\n" + PREFILL), path.name   # the search's prefill continues every seed
        assert check_static(code, ["haiku", "jax", "numpy", "math", "functools"], "get_triplet_msgs") is None


# v1 (dm-clrs's own processor) trains in the fast tier; the other eight (an XLA compile each) are slow.
@pytest.mark.parametrize("seed_file", [pytest.param(p, id=p.stem, marks=() if p.stem == "v1" else pytest.mark.slow)
                                       for p in SEEDS])
def test_seed_passes_checks_and_trains(seed_file, pools):
    from evo.tasks.clrs.checks import check_triplet_fn
    from evo.tasks.clrs.harness import load_program
    from evo.tasks.clrs.processor import evolved_factory
    from evo.tasks.clrs.train import train_and_evaluate

    fn = load_program(seed_file.read_text())
    check_triplet_fn(fn, HIDDEN, NB_TRIPLET_FTS)   # raises ChildFailure on any contract violation
    result = train_and_evaluate(evolved_factory(fn, True, NB_TRIPLET_FTS), [pools["train"]], pools["val"], None,
                                steps=2, batch_size=4, eval_batch_size=8, hidden_dim=HIDDEN, eval_every=1000)
    assert isinstance(result["num_params"], int) and 0 < result["num_params"] < math.inf
    assert 0.0 <= result["val_accuracy"] <= 1.0
    assert [h["step"] for h in result["history"]] == [0, 2]
    assert math.isfinite(result["history"][-1]["train_loss"])
    assert "test_accuracy" not in result


@pytest.mark.slow   # dm-clrs's model built twice
@pytest.mark.parametrize("hidden_dim", [HIDDEN, 128])   # 128: the paper's size
def test_v1_is_dm_clrs_triplet_gmpnn_in_size(pools, hidden_dim):
    """Same parameter count and the same multiset of parameter shapes as dm-clrs's own processor."""
    import jax
    import numpy as np

    from evo.tasks.clrs.harness import load_program
    from evo.tasks.clrs.processor import evolved_factory, reference_factory
    from evo.tasks.clrs.train import count_params

    v1 = load_program((REPO / "seeds" / "clrs" / "v1.py").read_text())
    ours = init_params(evolved_factory(v1, True, NB_TRIPLET_FTS), pools["train"], hidden_dim)
    theirs = init_params(reference_factory(True, NB_TRIPLET_FTS), pools["train"], hidden_dim)
    assert count_params(ours) == count_params(theirs)

    def shapes(params):
        return sorted(tuple(np.shape(p)) for p in jax.tree_util.tree_leaves(params))
    assert shapes(ours) == shapes(theirs)
    if hidden_dim == 128:
        assert count_params(ours) == PAPER_BFS_PARAMS


# ---------------------------------------------------------------- broken and hostile children


BROKEN = {   # name: (body, status, words the reason must contain)
    "shape": ("    return hk.Linear(out_size)(z)\n", outcome.SHAPE_ERROR,
              ["(B, N, N, out_size)", f"(3, 5, 5, {HIDDEN})", "(3, 5, 16)"]),
    "batch_mixing": ("    tri_1 = edge_fts + jnp.max(edge_fts, axis=0, keepdims=True)\n"
                     "    return hk.Linear(out_size)(tri_1)\n", outcome.BATCH_DEPENDENCE, ["other graphs"]),
    "nan": ("    return hk.Linear(out_size)(edge_fts) * jnp.nan\n", outcome.SHAPE_ERROR, ["non-finite"]),
    "raises": ("    tri_1 = hk.Linear(nb_triplet_fts)(z)\n    return jnp.reshape(tri_1, (7, 7))\n",
               outcome.BUILD_ERROR, ["TypeError", "reshape"]),
}


@pytest.mark.parametrize("name", BROKEN)
def test_pre_training_check_names_the_problem(name):
    """The checks the sandbox runs before training, in this process (cheap, eager Haiku)."""
    from evo.tasks.clrs.checks import check_triplet_fn
    from evo.tasks.clrs.harness import load_program
    body, status, words = BROKEN[name]
    with pytest.raises(ChildFailure) as info:
        check_triplet_fn(load_program(HEAD + body), HIDDEN, NB_TRIPLET_FTS)
    assert info.value.status == status
    assert all(w in info.value.reason for w in words), info.value.reason


def test_bad_signature_and_missing_function_are_build_errors():
    from evo.tasks.clrs.checks import check_triplet_fn
    from evo.tasks.clrs.harness import load_program
    with pytest.raises(ChildFailure) as info:
        check_triplet_fn(load_program(PRELUDE + "\n\n\ndef get_triplet_msgs(z, edge_fts):\n    return z\n"), HIDDEN, 8)
    assert info.value.status == outcome.BUILD_ERROR and "cannot be called as" in info.value.reason
    # A program the static check would let through (the name is bound, not defined) that is not a function.
    with pytest.raises(ChildFailure) as info:
        check_triplet_fn(load_program(PRELUDE + "\nget_triplet_msgs = 3\n"), HIDDEN, 8)
    assert info.value.status == outcome.BUILD_ERROR and "not a function" in info.value.reason
    with pytest.raises(ChildFailure) as info:
        load_program(PRELUDE + "\n\n\ndef triplets(z):\n    return z\n")
    assert info.value.status == outcome.BUILD_ERROR and "get_triplet_msgs" in info.value.reason


@pytest.mark.parametrize("code, status, words", [
    (HEAD.replace(PRELUDE, PRELUDE + "\nimport os") + "    return os.getcwd()\n", outcome.FORBIDDEN, ["'os'"]),
    (HEAD + "    return open('/etc/passwd')\n", outcome.FORBIDDEN, ["'open'"]),
    (HEAD + "    return z.__class__\n", outcome.FORBIDDEN, ["__class__"]),
    (PRELUDE + "\n\n\ndef triplets(z, edge_fts, graph_fts, nb_triplet_fts, out_size):\n    return z\n",
     outcome.BUILD_ERROR, ["get_triplet_msgs"]),
    (HEAD + "    return hk.Linear(out_size)(z\n", outcome.SYNTAX_ERROR, ["line"]),
], ids=["import_os", "open", "dunder", "missing_function", "syntax"])
def test_static_failures_cost_no_sandbox(tiny_task, code, status, words):
    from evo.search.filter_eval import FilterAndEval
    from evo.sandbox.runner import SandboxLimits
    cfg, task, prepared = tiny_task
    evaluate = FilterAndEval(task, prepared, SandboxLimits(**OmegaConf.to_container(cfg.sandbox)), cfg.search.alpha)
    res = evaluate(code)
    assert res.status == status and all(w in res.reason for w in words), res
    assert res.isolation is None and res.num_params is None   # never reached the sandbox


@pytest.mark.parametrize("name", ["shape", pytest.param("batch_mixing", marks=pytest.mark.slow),   # a dm-clrs import each:
                                  pytest.param("nan", marks=pytest.mark.slow)])                 # shape stays in the fast tier
def test_sandbox_gives_broken_children_a_status(tiny_task, name):
    """The search's real path (FilterAndEval: static checks, then the harness in the sandbox) stops
    these children at the pre-training check: a dm-clrs import and a check, no compilation."""
    from evo.search.filter_eval import FilterAndEval
    from evo.search.evaluators import cpu_slots
    from evo.sandbox.runner import SandboxLimits
    cfg, task, prepared = tiny_task
    limits = SandboxLimits(**{**OmegaConf.to_container(cfg.sandbox), "timeout_s": 300})
    evaluate = FilterAndEval(task, prepared, limits, cfg.search.alpha)
    body, status, words = BROKEN[name]
    res = evaluate(HEAD + body, cpus=cpu_slots(1, True)[0])
    if name == "nan":   # caught by the check before training as non-finite output, or by training
        assert res.status in (outcome.SHAPE_ERROR, outcome.NAN), res
        assert "non-finite" in res.reason or "nan" in res.reason.lower(), res
    else:
        assert res.status == status, res
        assert all(w in res.reason for w in words), res
    assert res.num_params is None and res.fitness is None and res.isolation


@pytest.mark.slow
def test_evaluate_command_on_seed_v1(tiny_task):
    """`python -m evo.evaluate task=clrs ... child_file=seeds/clrs/v1.py`: the JSON verdict line."""
    cfg = tiny_task[0]
    proc = subprocess.run([sys.executable, "-m", "evo.evaluate", *TINY_CLRS, f"cache_dir={cfg.cache_dir}",
                           f"child_file={REPO / 'seeds' / 'clrs' / 'v1.py'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] in (outcome.OK, outcome.FILTERED), result
    assert result["num_params"] > 0 and 0.0 <= result["val_accuracy"] <= 1.0 and 0.0 <= result["test_accuracy"] <= 1.0
    assert "generating CLRS data" not in proc.stdout   # the module's pools were reused from the cache


def test_a_cut_off_sample_is_closed_into_a_working_function():
    """A runaway stack of layers (the stop rule cuts it) gets the task's closing return and then passes
    the contract check: the repair makes a trainable child, recorded as such."""
    from evo.search.crossmut import CrossMut
    from evo.search.repair import finish
    from evo.tasks.clrs.checks import check_triplet_fn
    from evo.tasks.clrs.harness import load_program
    from evo.tasks.clrs.task import CLRSTask

    task = CLRSTask()
    rules = CrossMut().rules(task)
    text = " hk.Linear(nb_triplet_fts)(z)\n" + "".join(f"    tri_{i} = hk.Linear(nb_triplet_fts)(edge_fts)\n" for i in range(2, 30))
    code, repairs = finish(task.prelude, task.prefill, text, rules, task.closing_return, task.entry)
    assert "cut_too_long" in repairs and "closed_with_return" in repairs
    assert check_static(code, task.allowed_imports, task.entry) is None
    check_triplet_fn(load_program(code), HIDDEN, NB_TRIPLET_FTS)

"""Sandbox entry points for CLRS children: the source of ``get_triplet_msgs`` in, exported modules out.

``export_source`` (the untrusted stage) runs INSIDE the sandboxed subprocess that runs the child's Python; it
sees no data. The numbers the search acts on are computed by ``evo.tasks.clrs.trusted.score_export`` in another
process in which no child Python ever runs (``evo.sandbox.runner.TWO_STAGE``). Nothing heavy is imported at module
level (the search process imports this module for ``CHILD_ENV``); dm-clrs imports tensorflow (~4 s, ~0.8 GB).
"""

from __future__ import annotations

from pathlib import Path

from evo.tasks.child import JAX_CHILD_ENV, run_program

# dm-clrs imports tensorflow (for its dataset code, unused here): quiet, and no oneDNN rewrites.
CHILD_ENV = {**JAX_CHILD_ENV, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0"}


def load_program(code: str):
    """Run the program's module code; return its ``get_triplet_msgs``."""
    return run_program(code, "get_triplet_msgs")


def evaluate_source(code: str, data_dir: str, train_pools: list, val_pool: str, test_pool: str,
                    nb_triplet_fts: int = 8, use_ln: bool = True, **train_kwargs) -> dict:
    """Both stages in THIS process (tests and benchmarks; the search runs them in two processes, see
    ``evo.sandbox.runner.TWO_STAGE``): :func:`export_source` on ``code``, then ``trusted.score_export`` on its output.

    Raises ``ChildFailure`` (SYNTAX_ERROR, BUILD_ERROR, SHAPE_ERROR, BATCH_DEPENDENCE, NAN); other
    exceptions escape to the caller."""
    from evo.tasks.clrs.trusted import score_export

    exported = export_source(code, hidden_dim=train_kwargs.get("hidden_dim", 128),
                             nb_triplet_fts=nb_triplet_fts)["exported"]
    return score_export("", data_dir=data_dir, train_pools=train_pools, val_pool=val_pool, test_pool=test_pool,
                        exported=exported, nb_triplet_fts=nb_triplet_fts, use_ln=use_ln, **train_kwargs)


def export_source(code: str, hidden_dim: int = 128, nb_triplet_fts: int = 8, platforms: list | None = None) -> dict:
    """UNTRUSTED STAGE (runs in the sandbox, sees no data): check the child's function, then export it.

    Returns {"exported": {"init", "forward", "backward"}} (evo/tasks/clrs/exporting.py). The checks here only
    give a clear reason early (they run again in the trusted stage, on the exported modules): nothing this
    process returns is trusted. Raises ``ChildFailure`` for a function that cannot be built or exported."""
    from evo.tasks.clrs.checks import check_triplet_fn
    from evo.tasks.clrs.exporting import export_triplet_fn

    fn = load_program(code)
    check_triplet_fn(fn, hidden_dim, nb_triplet_fts)
    return {"exported": export_triplet_fn(fn, hidden_dim, nb_triplet_fts, platforms)}


def evaluate_in_child(code: str, data_dir: str, train_pools: list, val_pool: str, test_pool: str,
                      nb_triplet_fts: int = 8, use_ln: bool = True, **train_kwargs) -> dict:
    """The former single-process path, kept ONLY as a reference for benchmarks/clrs_trust_cost.py and for the
    attack tests (tests/test_clrs_trust.py) that show what it let a child forge: the child's function is
    checked and trained in the process that also computes and reports its score. Not used by the search."""
    from evo.tasks.clrs import data
    from evo.tasks.clrs.checks import check_triplet_fn
    from evo.tasks.clrs.processor import evolved_factory
    from evo.tasks.clrs.train import train_and_evaluate
    fn = load_program(code)
    check_triplet_fn(fn, train_kwargs.get("hidden_dim", 128), nb_triplet_fts)
    folder = Path(data_dir)
    pools = [data.load(folder, name) for name in train_pools]
    val, test = data.load(folder, val_pool), data.load(folder, test_pool)
    # Other exceptions escape: the sandbox records them as a crash, with the traceback's last line.
    result = train_and_evaluate(evolved_factory(fn, use_ln, nb_triplet_fts), pools, val, test, **train_kwargs)
    result.pop("history")
    import jax
    return {**result, "device": jax.default_backend()}

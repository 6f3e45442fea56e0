"""Sandbox entry point for CLRS children: the source of ``get_triplet_msgs`` in, EVAL metrics out.

``evaluate_source`` runs INSIDE the sandboxed subprocess. Nothing heavy is imported at module level
(the search process imports this module for ``CHILD_ENV``); dm-clrs imports tensorflow (~4 s, ~0.8 GB)
in the child.
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
    """Check the child's function, train dm-clrs's model with it, return size and scores.

    Raises ``ChildFailure`` (SYNTAX_ERROR, BUILD_ERROR, SHAPE_ERROR, BATCH_DEPENDENCE, NAN); other
    exceptions escape to the caller."""
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

"""The MNIST-1D task of the paper: a child is a Flax ``Model`` from (batch, 40) to (batch, 10) logits."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from evo.errors import fail
from evo.tasks.base import Prepared, Task
from evo.tasks.mnist1d.data import make_splits, save_splits
from evo.tasks.mnist1d.grammar import lark_grammar
from evo.tasks.mnist1d.harness import CHILD_ENV

PRELUDE = "import flax.linen as nn\nimport jax.numpy as jnp"
PREFILL = "class Model(nn.Module):\n    @nn.compact\n    def __call__(self, x):\n        x ="


class MNIST1DTask(Task):
    name = "mnist1d"
    prelude = PRELUDE
    prefill = PREFILL
    closing_return = "return nn.Dense(10)(x.reshape((x.shape[0], -1)))"
    harness = "evo.tasks.mnist1d.harness:evaluate_source"

    def __init__(self, train_steps: int = 8000, batch_size: int = 128, learning_rate: float = 0.01,
                 weight_decay: float = 1e-4, eval_every: int = 250, val_size: int = 500,
                 dataset_seed: int = 42, split_seed: int = 0, train_seed: int = 0,
                 allowed_imports: Sequence[str] = ("flax", "jax", "numpy", "math", "functools"),
                 seeds_dir: Optional[str] = None, banned_words: Sequence[str] = (), name: str = "mnist1d",
                 fit_on_val: bool = False, shuffle: bool = True, train_loop: str = "auto"):
        # fit_on_val, shuffle: only for the MNIST-1D paper's protocol (benchmarks/mnist1d_published.py,
        # passed as +task.fit_on_val=true); not in conf/task/mnist1d.yaml, so stored runs' task settings
        # (and their resume checks) are unchanged. See train_and_evaluate.
        self.train_kwargs = dict(steps=train_steps, batch_size=batch_size, learning_rate=learning_rate,
                                 weight_decay=weight_decay, eval_every=eval_every, seed=train_seed)
        if train_loop != "auto":   # auto is the trainer's own default: the harness gets today's keywords
            self.train_kwargs["train_loop"] = train_loop
        if fit_on_val or not shuffle:
            self.train_kwargs.update(fit_on_val=bool(fit_on_val), shuffle=bool(shuffle))
        self.data_kwargs = dict(dataset_seed=dataset_seed, val_size=val_size, split_seed=split_seed)
        self.allowed_imports = list(allowed_imports)
        self.seeds_dir = seeds_dir
        self.banned_words = list(banned_words)

    @classmethod
    def check_config(cls, node, cfg) -> None:
        super().check_config(node, cfg)
        from evo.tasks.mnist1d.train import TRAIN_LOOP_CHOICES  # train.py imports jax, flax, optax: not at module level
        if node.get("train_loop", "auto") not in TRAIN_LOOP_CHOICES:
            fail("task.train_loop", node.train_loop, f"Allowed values: {', '.join(TRAIN_LOOP_CHOICES)}.",
                 "pass task.train_loop=auto (the measured winner for the backend).")

    def grammar(self) -> str:
        """The ``@nn.compact`` body language, keywords from the installed flax (evo/tasks/mnist1d/grammar.py)."""
        return lark_grammar()

    def data_path(self, cache_dir: Path) -> Path:
        d = self.data_kwargs
        return Path(cache_dir) / "data" / f"mnist1d_s{d['dataset_seed']}_v{d['val_size']}_p{d['split_seed']}.npz"

    def prepare(self, cache_dir: Path) -> Prepared:
        """Generate the splits once (< 1 s) into the cache; children read the file, read-only."""
        path = self.data_path(cache_dir)
        if not path.exists():
            save_splits(make_splits(**self.data_kwargs), path)
        return Prepared(harness_kwargs={"data_path": str(path), **self.train_kwargs}, readonly_paths=[str(path)],
                        env=dict(CHILD_ENV))

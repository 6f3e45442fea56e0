"""The CLRS child trainer: dm-clrs's ``BaselineModel`` with the child's processor, trained as run.py does.

The model, loss, hint handling and evaluation are dm-clrs's own (``clrs.models.BaselineModel``,
``clrs.evaluate``) with the Triplet-GMPNN single-task hyperparameters of ``clrs/examples/run.py``
(hidden 128, encoded+decoded hints, soft hint re-prediction, xavier_on_scalars encoders, batch 32,
lr 1e-3, gradient clipping at norm 1, training lengths 4/7/11/13/16 in turn). One change, from the
paper: the optimiser is AdamW (``EvoBaselineModel``; the paper trains children with AdamW) instead of
run.py's Adam.

The loop is run.py's: one ``feedback`` step per batch, validation every ``eval_every`` steps, and the
parameters of the best validation score are the ones tested out of distribution. It differs only
where that saves time without changing the computation: batches come from the cached pools
(``data.Pool``), each with one shape, so ``BaselineModel``'s jitted step compiles once per training
length and its jitted predict once per evaluation split; nothing is written to disk (run.py
checkpoints the best model in a pickle, here a host copy of its parameters).
"""

from __future__ import annotations

import math
import time
from typing import Optional, Sequence

import jax
import numpy as np
import optax

from evo.outcome import NAN, ChildFailure

# Compiler options for code run once (init): XLA's backend optimisation is most of its compile time
# and buys nothing there (the same choice as the MNIST-1D trainer's RUN_ONCE).
RUN_ONCE = {"xla_backend_optimization_level": 0}


def make_model_class():
    """``BaselineModel`` with AdamW (built lazily: importing clrs costs seconds)."""
    from clrs._src.baselines import BaselineModel

    class EvoBaselineModel(BaselineModel):
        def __init__(self, *args, weight_decay: float = 0.0, **kwargs):
            super().__init__(*args, **kwargs)
            # self.opt stays run.py's clip + Adam: dm-clrs's filter_null_grads calls opt.update(grads,
            # state) without params, which optax.adamw needs. The decoupled decay is added here instead:
            # p_new = p - lr * (adam_update + weight_decay * p), exactly optax.adamw's update.
            self._decay = kwargs.get("learning_rate", 0.005) * weight_decay

        def init(self, features, seed):
            # BaselineModel.init runs the network eagerly, op by op (8.7 s for a tiny BFS model here);
            # jitted with cheap compiler options it takes a fraction of that. Same parameters.
            eager_init = self.net_fn.init
            self.net_fn = self.net_fn._replace(init=jax.jit(eager_init, static_argnums=(2,),
                                                            static_argnames=("algorithm_index", "return_hints",
                                                                             "return_all_outputs"),
                                                            compiler_options=RUN_ONCE))
            try:
                super().init(features, seed)
            finally:
                self.net_fn = self.net_fn._replace(init=eager_init)
            # Committed to the device, as every training step's outputs are: otherwise the second step (and the
            # second evaluation) compiles again whenever the step holds an exported module (the trusted stage's
            # triplet function, evo/tasks/clrs/trusted.py), whose lowering pins its device. Same values.
            device = jax.devices()[0]
            self._device_params = jax.device_put(self._device_params, device)
            self._device_opt_state = jax.device_put(self._device_opt_state, device)

        def _update_params(self, params, grads, opt_state, algorithm_index):
            new, opt_state = super()._update_params(params, grads, opt_state, algorithm_index)
            if self._decay:
                new = jax.tree_util.tree_map(lambda p_new, p: p_new - self._decay * p, new, params)
            return new, opt_state

    return EvoBaselineModel


def count_params(params) -> int:
    return int(sum(np.prod(np.shape(p), dtype=np.int64) for p in jax.tree_util.tree_leaves(params)))


def build_model(processor_factory, spec: dict, dummy_feedback, *, hidden_dim: int = 128, learning_rate: float = 1e-3,
                grad_clip: float = 1.0, weight_decay: float = 0.0):
    """run.py's Triplet-GMPNN ``BaselineModel`` for one algorithm, with AdamW."""
    return make_model_class()(
        spec=spec, dummy_trajectory=dummy_feedback, processor_factory=processor_factory, hidden_dim=hidden_dim,
        encode_hints=True, decode_hints=True, encoder_init="xavier_on_scalars", use_lstm=False,
        learning_rate=learning_rate, grad_clip_max_norm=grad_clip, dropout_prob=0.0, hint_teacher_forcing=0.0,
        hint_repred_mode="soft", nb_msg_passing_steps=1, checkpoint_path="/nonexistent",  # never written
        weight_decay=weight_decay)


class TrainBatches:
    """run.py's training stream over cached pools: one batch per step, the training lengths in turn,
    indices drawn with replacement (as ``Sampler.next(batch)``), ``pos`` randomised per batch."""

    def __init__(self, pools: Sequence, batch_size: int, seed: int):
        self.pools, self.batch_size = list(pools), batch_size
        self.rng = np.random.RandomState(seed)

    def batch(self, step: int):
        import clrs
        pool = self.pools[step % len(self.pools)]
        fb = pool.batch(self.rng.choice(pool.size, self.batch_size, replace=True))
        return next(clrs.process_random_pos(iter([fb]), self.rng))


def evaluate_pool(model, pool, batch_size: int, key) -> float:
    """``clrs.evaluate`` score of ``model`` on a whole pool, in batches of one shape (the last one
    is filled up with the pool's first trajectories and its extra predictions dropped)."""
    import clrs
    n = pool.size
    size = min(batch_size, n)
    preds = []
    for start in range(0, n, size):
        idx = np.arange(start, start + size) % n
        key, sub = jax.random.split(key)
        p, _ = model.predict(sub, pool.batch(idx).features)
        keep = min(size, n - start)
        preds.append(jax.tree_util.tree_map(lambda x: np.asarray(x)[:keep], p))
    preds = jax.tree_util.tree_map(lambda *x: np.concatenate(x, 0), *preds)
    return float(clrs.evaluate(pool.feedback.outputs, preds)["score"])


def train_and_evaluate(processor_factory, train_pools: Sequence, val_pool, test_pool=None, *, steps: int = 2000,
                       batch_size: int = 32, learning_rate: float = 1e-3, weight_decay: float = 1e-4,
                       grad_clip: float = 1.0, hidden_dim: int = 128, eval_every: int = 50,
                       eval_batch_size: int = 32, seed: int = 0, on_eval=None) -> dict:
    """Train a fresh model for ``steps`` steps; return its size, best validation score (``val_accuracy``),
    the out-of-distribution test score of those parameters (``test_accuracy``) and timings.

    Raises ``ChildFailure(NAN)`` when the loss becomes non-finite (checked at each evaluation, so the
    loop never waits on the device between them)."""
    batches = TrainBatches(train_pools, batch_size, seed)
    first = batches.batch(0)
    model = build_model(processor_factory, train_pools[0].spec, first, hidden_dim=hidden_dim,
                        learning_rate=learning_rate, grad_clip=grad_clip, weight_decay=weight_decay)
    t0 = time.perf_counter()
    model.init(first.features, seed + 1)
    num_params = count_params(model.params)
    key = jax.random.PRNGKey(seed)
    eval_key = jax.random.PRNGKey(seed + 2)
    losses, history, compile_s, eval_s = [], [], 0.0, 0.0
    best = {"score": -math.inf, "step": None, "params": None}

    def check_losses(upto: int) -> Optional[float]:
        values = np.asarray(jax.device_get(losses))
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ChildFailure(NAN, f"training loss became {values[bad[0]]} at step {upto - len(values) + bad[0] + 1}")
        losses.clear()
        return float(values.mean()) if values.size else None

    t_train = time.perf_counter()
    for step in range(steps + 1):
        if step % eval_every == 0 or step == steps:
            mean_loss = check_losses(step)
            te = time.perf_counter()
            score = evaluate_pool(model, val_pool, eval_batch_size, eval_key)
            eval_s += time.perf_counter() - te
            history.append({"step": step, "val_score": score, "train_loss": mean_loss})
            if on_eval:
                on_eval(history[-1])
            if score > best["score"]:
                best = {"score": score, "step": step, "params": model.params}   # a host copy
        if step == steps:
            break
        fb = first if step == 0 else batches.batch(step)
        key, sub = jax.random.split(key)
        ts = time.perf_counter()
        losses.append(model.feedback(sub, fb))
        if step < len(train_pools):   # the first step of each training length compiles
            jax.block_until_ready(losses[-1])
            compile_s += time.perf_counter() - ts
    train_s = time.perf_counter() - t_train - eval_s
    result = {"num_params": num_params, "val_accuracy": best["score"], "best_step": best["step"],
              "train_s": train_s, "compile_s": compile_s, "eval_s": eval_s, "init_s": t_train - t0,
              "s_per_step": (train_s - compile_s) / max(1, steps - len(train_pools)), "history": history}
    if test_pool is not None:
        model.params = best["params"]
        te = time.perf_counter()
        result["test_accuracy"] = evaluate_pool(model, test_pool, eval_batch_size, jax.random.PRNGKey(seed + 3))
        result["test_s"] = time.perf_counter() - te
    return result

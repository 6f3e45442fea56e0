"""The MNIST-1D child trainer: the paper's EVAL (AdamW, 8000 steps, lr 0.01, batch 128).

The model is any ``flax.linen`` module mapping float32 (batch, 40) to logits (batch, 10); the
trainer knows nothing else about it (Flax-examples style: model code apart from training code).
Fitness uses the BEST validation accuracy seen at any evaluation point, and the test accuracy
reported is that of the parameters at that point.

Loop design, chosen by measurement on the 2-core CPU VM (seed CNN, batch 128, 1 thread):
  * one jitted step called from a Python loop: ~0.85-0.95 ms/step, compile ~1-1.5 s;
  * the same step inside ``lax.scan`` (chunks of 5): ~6.2 ms/step, 7x slower, whatever the
    XLA flags (XLA:CPU runs convolutions slowly inside while loops, jax issue #12868);
  * K steps unrolled in one jit: K=5 0.89 ms/step (compile 2.5 s), K=20 0.82 ms/step but 9.7 s
    to compile, which costs more than it saves over 8000 steps;
  * the step is compute-bound: convolutions (forward, and the dilated ones of the backward pass)
    are ~70% of it, AdamW ~4%, the dispatch of a jitted call ~20 us. XLA options tried gave no
    speed-up (thunk runtime off, oneDNN/XNNPACK/YNNPACK convolution fusions, vector width 512,
    async dispatch off, backend optimisation level 1; fusion emitters off compiled the CNN 0.5 s
    faster but ran the GRU seed 2x slower); passing host-side numpy batches instead: same speed.
So: one jitted step per Python iteration, with the train state donated (updated in place), the
data and a precomputed permutation of example indices resident on the device, and the batch
gathered inside the step from ``state.step`` (no host-to-device copy per step). The running loss
sum and the first non-finite step are kept in the state too, so the loop never waits on the
device between evaluations. On a GPU re-measure (a scanned chunk may win there): ``train_loop`` chooses,
and ``auto`` takes the measured winner per backend from ``TRAIN_LOOP_MEASURED``.

For a 1-thread child set ``harness.CHILD_ENV`` before jax is imported and pin the process to one
core (see the notes there: XLA:CPU sizes its thread pool by the CPU affinity). Training is
deterministic given ``seed`` (init key and batch order both derive from it) for a given number of
usable cores; pinned children are therefore reproducible.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax.training import train_state

from evo.outcome import NAN, ChildFailure


# Compiler options for code run once or a few times (init, the pre-training checks): XLA's backend
# optimisation is most of their compile time and buys nothing there. Measured on the seed CNN:
# jitted init 2.8 s -> 0.7 s (threefry random bits compile slowly), a forward pass 0.38 -> 0.08 s.
RUN_ONCE = {"xla_backend_optimization_level": 0}
INIT_BATCH = 8  # init_variables' batch size, shared by check_model and training: one compilation


@functools.partial(jax.jit, static_argnums=0, compiler_options=RUN_ONCE)
def _init_cached(model: nn.Module, key: jax.Array, x: jax.Array) -> Any:
    return model.init(key, x)


def init_variables(model: nn.Module, key: jax.Array, x: jax.Array) -> Any:
    """``model.init`` jitted; cached per (model, input shape), so the checks and training share it."""
    try:
        hash(model)
    except TypeError:  # a module with an unhashable attribute: no cache
        return jax.jit(model.init, compiler_options=RUN_ONCE)(key, x)
    return _init_cached(model, key, x)


class TrainState(train_state.TrainState):
    """Flax TrainState plus two scalars updated inside the jitted step."""

    loss_sum: jax.Array  # sum of the training losses since the last evaluation
    bad_step: jax.Array  # 1-based step of the first non-finite loss, or -1


def count_params(params: Any) -> int:
    return int(sum(np.prod(np.shape(p), dtype=np.int64) for p in jax.tree_util.tree_leaves(params)))


def batch_order(num_examples: int, steps: int, batch_size: int, seed: int, shuffle: bool = True) -> np.ndarray:
    """Example indices for every step: concatenated epoch permutations, (steps * batch_size,) int32.

    Batches may straddle an epoch boundary, so every example is seen equally often. ``shuffle=False``:
    the examples in their stored order every epoch (the MNIST-1D paper's loop, ``x[bix:bix + batch]``).
    """
    rng = np.random.default_rng(seed)
    need = steps * batch_size
    epochs = -(-need // num_examples)
    perm = rng.permutation if shuffle else np.arange
    order = np.concatenate([perm(num_examples) for _ in range(epochs)])[:need]
    return order.astype(np.int32)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """The training loss: mean softmax cross-entropy (float32)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels).mean()


_cross_entropy = cross_entropy


def make_train_step(batch_size: int, loss_and_grad=None):
    """A pure step: (state, x_train, y_train, order) -> state. Jit it with the state donated.

    ``loss_and_grad(params, x, y) -> (loss, grads)`` replaces ``jax.value_and_grad`` of the cross-entropy
    of ``state.apply_fn`` (an exported child brings its own, see evo/tasks/mnist1d/trusted.py)."""

    def train_step(state: TrainState, x: jax.Array, y: jax.Array, order: jax.Array) -> TrainState:
        idx = jax.lax.dynamic_slice_in_dim(order, state.step * batch_size, batch_size)
        xb, yb = x[idx], y[idx]

        def loss_fn(params):
            return cross_entropy(state.apply_fn({"params": params}, xb), yb)

        if loss_and_grad is None:
            loss, grads = jax.value_and_grad(loss_fn)(state.params)
        else:
            loss, grads = loss_and_grad(state.params, xb, yb)
        finite = jnp.isfinite(loss)
        bad_step = jnp.where((state.bad_step < 0) & ~finite, state.step + 1, state.bad_step)
        state = state.apply_gradients(grads=grads)
        return state.replace(loss_sum=state.loss_sum + loss, bad_step=bad_step)

    return train_step


# How the trainer steps, by measurement per JAX backend: "loop" (one jitted step per Python iteration) or "scan"
# (lax.scan over the steps between two evaluations, one dispatch per chunk). CPU: the loop, ~7x faster on the 2-core
# VM (above; benchmarks/device_check.py train --device cpu measured scan at 0.08x the loop over 300 steps, under
# load). GPU: not measured yet (no GPU lent so far): the loop until benchmarks/device_check.sh's train part says
# otherwise (its "faster_loop"); enter the measured winner here.
TRAIN_LOOP_MEASURED = {"cpu": "loop"}
TRAIN_LOOP_CHOICES = ("auto", "loop", "scan")


def train_loop_for(choice: str, backend: str) -> str:
    """``loop`` or ``scan`` on JAX ``backend`` (jax.default_backend()): ``auto`` takes the measured winner for that
    backend (the loop where nothing was measured)."""
    if choice not in TRAIN_LOOP_CHOICES:
        raise ValueError(f"task.train_loop={choice!r}: choose one of {', '.join(TRAIN_LOOP_CHOICES)}")
    return TRAIN_LOOP_MEASURED.get(backend, "loop") if choice == "auto" else choice


def make_train_chunk(train_step, length: int):
    """``length`` steps of ``train_step`` in one ``lax.scan``: (state, x, y, order) -> state, the same steps in the
    same order as ``length`` calls of the step (jit it with the state donated)."""

    def train_chunk(state: TrainState, x: jax.Array, y: jax.Array, order: jax.Array) -> TrainState:
        return jax.lax.scan(lambda s, _: (train_step(s, x, y, order), None), state, None, length=length)[0]

    return train_chunk


def make_eval_step(apply_fn, split: int):
    """A pure evaluation: (params, x, y) -> correct predictions on x[:split] and on x[split:].

    Validation and test rows go through the model in one call (one compilation, one dispatch).
    """

    def eval_step(params: Any, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        correct = (jnp.argmax(apply_fn({"params": params}, x), axis=-1) == y).astype(jnp.int32)
        return correct[:split].sum(), correct[split:].sum()

    return eval_step


def train_and_evaluate(model: nn.Module, splits: dict, *, steps: int = 8000, batch_size: int = 128,
                       learning_rate: float = 0.01, weight_decay: float = 1e-4, eval_every: int = 250,
                       seed: int = 0, fit_on_val: bool = False, shuffle: bool = True,
                       loss_and_grad=None, train_loop: str = "auto") -> dict:
    """Train ``model`` with AdamW on ``splits`` and score it (the paper's EVAL).

    Validation and test accuracy are measured every ``eval_every`` steps and after the last step.
    Returns num_params, val_accuracy (best seen), test_accuracy (at the best-validation point),
    best_step, final_train_loss (mean training loss over the steps since the previous
    evaluation), compile_s, train_s (the loop, evaluations included) and steps_per_s.
    Raises ``ChildFailure(NAN, ...)`` if a training loss is NaN or infinite. ``loss_and_grad``: see
    ``make_train_step`` (the trusted stage passes an exported child's). ``train_loop``: loop | scan | auto
    (``train_loop_for``); both step through the same batches and give the same training up to float rounding.

    For the check against the MNIST-1D paper's own protocol (benchmarks/mnist1d_published.py), not
    used by the search: ``fit_on_val`` trains on the validation examples too (all 4000 training
    examples, as that paper did; validation accuracy is then not held out), ``shuffle=False`` keeps
    the stored example order every epoch; ``final_test_accuracy`` (after the last step) is what that
    paper reports.
    """
    if steps < 1 or batch_size < 1 or eval_every < 1:
        raise ValueError("steps, batch_size and eval_every must be positive")
    scan = train_loop_for(train_loop, jax.default_backend()) == "scan"
    fit_x, fit_y = splits["x_train"], splits["y_train"]
    if fit_on_val:
        fit_x, fit_y = np.concatenate([fit_x, splits["x_val"]]), np.concatenate([fit_y, splits["y_val"]])
    x_train = jnp.asarray(fit_x, jnp.float32)
    y_train = jnp.asarray(fit_y, jnp.int32)
    n_val = len(splits["y_val"])
    x_eval = jnp.asarray(np.concatenate([splits["x_val"], splits["x_test"]]), jnp.float32)
    y_eval = jnp.asarray(np.concatenate([splits["y_val"], splits["y_test"]]), jnp.int32)
    n_test = len(splits["y_test"])
    order = jnp.asarray(batch_order(len(fit_y), steps, batch_size, seed, shuffle))

    params = init_variables(model, jax.random.key(seed), x_train[:INIT_BATCH]).get("params", {})
    state = TrainState.create(
        apply_fn=model.apply, params=params,
        tx=optax.adamw(learning_rate, weight_decay=weight_decay),
        loss_sum=jnp.zeros((), jnp.float32), bad_step=jnp.full((), -1, jnp.int32))

    # evaluations every eval_every steps and after the last; training advances from one to the next
    points = list(range(eval_every, steps, eval_every)) + [steps]
    t0 = time.perf_counter()
    train_step = make_train_step(batch_size, loss_and_grad)
    if scan:  # one compiled chunk per distinct distance between evaluations (at most two)
        chunks = {n: jax.jit(make_train_chunk(train_step, n), donate_argnums=0).lower(
            state, x_train, y_train, order).compile() for n in sorted({b - a for a, b in zip([0] + points, points)})}
    else:
        step_fn = jax.jit(train_step, donate_argnums=0).lower(state, x_train, y_train, order).compile()
    eval_fn = jax.jit(make_eval_step(model.apply, n_val)).lower(state.params, x_eval, y_eval).compile()
    compile_s = time.perf_counter() - t0

    best_val, best_test, best_step, last_loss, last_eval = -1.0, 0.0, 0, math.nan, 0
    t0 = time.perf_counter()
    for step in points:
        if scan:
            state = chunks[step - last_eval](state, x_train, y_train, order)
        else:
            for _ in range(step - last_eval):
                state = step_fn(state, x_train, y_train, order)
        bad_step, loss_sum = jax.device_get((state.bad_step, state.loss_sum))
        if bad_step >= 0:
            raise ChildFailure(NAN, f"training loss became non-finite at step {int(bad_step)} of {steps}")
        last_loss = float(loss_sum) / (step - last_eval)
        last_eval = step
        state = state.replace(loss_sum=jnp.zeros((), jnp.float32))
        val_correct, test_correct = jax.device_get(eval_fn(state.params, x_eval, y_eval))
        val_acc = float(val_correct) / n_val
        if val_acc > best_val:
            best_val, best_test, best_step = val_acc, float(test_correct) / n_test, step
        final_test = float(test_correct) / n_test
    train_s = time.perf_counter() - t0

    return {
        "num_params": count_params(state.params),
        "val_accuracy": best_val,
        "test_accuracy": best_test,
        "best_step": best_step,
        "final_test_accuracy": final_test,
        "final_train_loss": last_loss,
        "compile_s": compile_s,
        "train_s": train_s,
        "steps_per_s": steps / train_s,
    }

"""The trainer settings of the MNIST-1D paper's protocol (benchmarks/mnist1d_published.py): examples in
stored order, training on the validation examples too, and the test accuracy after the last step."""

from __future__ import annotations

import numpy as np

from evo.tasks.mnist1d.task import MNIST1DTask
from evo.tasks.mnist1d.train import batch_order, train_and_evaluate


def test_batch_order_in_stored_order_is_the_mnist1d_loop():
    # notebooks/train.py: bix = (step * batch) % len(x); x[bix:bix + batch]
    order = batch_order(4000, 90, 100, seed=3, shuffle=False)
    assert order.tolist() == [(s * 100 + i) % 4000 for s in range(90) for i in range(100)]
    shuffled = batch_order(4000, 90, 100, seed=3)
    assert sorted(shuffled[:4000].tolist()) == list(range(4000)) and shuffled[:100].tolist() != list(range(100))


def test_fit_on_val_trains_on_the_validation_examples_and_the_final_test_accuracy_is_reported():
    """Classes 5-9 appear only in the validation examples: a logistic regression predicts them on the
    test set only when it trains on those examples too."""
    import flax.linen as nn

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(10)(x)

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 40)) * 3

    def examples(classes, n):
        y = rng.choice(classes, size=n).astype(np.int32)
        return (centres[y] + rng.normal(size=(n, 40))).astype(np.float32), y

    (xt, yt), (xv, yv), (xs, ys) = examples(range(5), 300), examples(range(5, 10), 300), examples(range(10), 400)
    splits = {"x_train": xt, "y_train": yt, "x_val": xv, "y_val": yv, "x_test": xs, "y_test": ys}
    held_out = train_and_evaluate(Model(), splits, steps=200, batch_size=50, eval_every=50)
    fitted = train_and_evaluate(Model(), splits, steps=200, batch_size=50, eval_every=50, fit_on_val=True,
                                shuffle=False)
    assert held_out["val_accuracy"] == 0.0 and held_out["final_test_accuracy"] < 0.6   # never predicts 5-9
    assert fitted["val_accuracy"] > 0.9 and fitted["final_test_accuracy"] > 0.9
    assert 0.0 <= held_out["test_accuracy"] <= 1.0


def test_the_protocol_knobs_reach_the_harness_only_when_set():
    assert "fit_on_val" not in MNIST1DTask().train_kwargs   # the search's children: unchanged settings
    assert "train_loop" not in MNIST1DTask().train_kwargs and MNIST1DTask(train_loop="scan").train_kwargs["train_loop"] == "scan"
    task = MNIST1DTask(fit_on_val=True, shuffle=False, batch_size=100, weight_decay=0.0, train_steps=6000)
    assert task.train_kwargs == {"steps": 6000, "batch_size": 100, "learning_rate": 0.01, "weight_decay": 0.0,
                                 "eval_every": 250, "seed": 0, "fit_on_val": True, "shuffle": False}

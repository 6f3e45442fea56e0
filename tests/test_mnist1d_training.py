"""MNIST-1D harness: seeds, pre-training checks, failure statuses, determinism, paper accuracy.

Real JAX training on CPU (about a minute in all, most of it the 8000-step paper run of the CNN).
"""

from __future__ import annotations

import ast
import math
import os
import pathlib
import random

from evo.tasks.mnist1d.harness import CHILD_ENV, evaluate_source  # light: jax is imported lazily

# The sandboxed child's single-threaded XLA settings (effective only if jax is not imported yet).
for _key, _value in CHILD_ENV.items():
    os.environ.setdefault(_key, _value)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from evo import outcome  # noqa: E402
from evo.outcome import ChildFailure  # noqa: E402
from evo.tasks.mnist1d.data import KEYS, load_splits, make_splits, save_splits  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SEED_DIR = ROOT / "seeds" / "mnist1d"
SEED_PARAMS = {"cnn": 5210, "gru": 5110, "mlp": 15210, "residual_cnn": 91082}
HEADER = ("import flax.linen as nn\nimport jax.numpy as jnp\n\n\nclass Model(nn.Module):\n"
          "  @nn.compact\n  def __call__(self, x):\n")
TIMING_KEYS = {"compile_s", "train_s", "steps_per_s"}


def child(body: str) -> str:
    return HEADER + body


@pytest.fixture(scope="module")
def splits():
    return make_splits()


@pytest.fixture(scope="module")
def data_path(splits, tmp_path_factory):
    path = tmp_path_factory.mktemp("mnist1d") / "splits.npz"
    save_splits(splits, path)
    return str(path)


def failure(code: str, data_path: str, **kwargs) -> ChildFailure:
    with pytest.raises(ChildFailure) as info:
        evaluate_source(code, data_path, **kwargs)
    return info.value


# ---------------------------------------------------------------- data


def test_splits_shapes_and_roundtrip(splits, data_path, tmp_path, monkeypatch):
    sizes = {"train": 3500, "val": 500, "test": 1000}
    for name, n in sizes.items():
        assert splits[f"x_{name}"].shape == (n, 40) and splits[f"x_{name}"].dtype == np.float32
        assert splits[f"y_{name}"].shape == (n,) and splits[f"y_{name}"].dtype == np.int32
        assert set(np.unique(splits[f"y_{name}"])) == set(range(10))
    # validation rows are held-out training rows, not copies of training rows
    train_rows = {row.tobytes() for row in splits["x_train"]}
    assert not any(row.tobytes() in train_rows for row in splits["x_val"])
    loaded = load_splits(data_path)
    assert set(loaded) == set(KEYS)
    for k in KEYS:
        np.testing.assert_array_equal(loaded[k], splits[k])
    # generation is reproducible, writes nothing to the cwd and leaves global RNGs alone
    monkeypatch.chdir(tmp_path)
    np.random.seed(123)
    random.seed(123)
    np_before, py_before = np.random.random(), random.random()
    np.random.seed(123)
    random.seed(123)
    again = make_splits()
    assert np.random.random() == np_before and random.random() == py_before
    assert list(tmp_path.iterdir()) == []
    np.testing.assert_array_equal(again["x_val"], splits["x_val"])
    other = make_splits(split_seed=1)
    assert not np.array_equal(other["y_val"], splits["y_val"])


# ---------------------------------------------------------------- seeds


@pytest.mark.parametrize("name", sorted(SEED_PARAMS))
def test_seed_format_checks_and_short_training(name, data_path):
    code = (SEED_DIR / f"{name}.py").read_text()
    tree = ast.parse(code)
    assert ast.get_docstring(tree), "seed needs a module docstring"
    imports = [ast.unparse(n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert imports == ["import flax.linen as nn", "import jax.numpy as jnp"]
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "__call__")
    assert ast.unparse(call.body[0]).startswith("x = ")

    result = evaluate_source(code, data_path, steps=40, eval_every=20, batch_size=64)
    assert result["num_params"] == SEED_PARAMS[name]
    assert 0.0 <= result["val_accuracy"] <= 1.0 and 0.0 <= result["test_accuracy"] <= 1.0
    assert result["best_step"] in (20, 40)
    assert math.isfinite(result["final_train_loss"]) and result["final_train_loss"] > 0
    assert result["compile_s"] > 0 and result["train_s"] > 0 and result["steps_per_s"] > 0


@pytest.mark.slow   # trains twice; the fast tier trains each seed once
def test_training_is_deterministic(data_path):
    code = (SEED_DIR / "cnn.py").read_text()
    runs = [evaluate_source(code, data_path, steps=200, eval_every=50, seed=s) for s in (0, 0, 1)]
    strip = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in runs]
    assert strip[0] == strip[1]
    assert strip[0]["final_train_loss"] != strip[2]["final_train_loss"]


@pytest.mark.slow   # trains twice; the fast tier trains each seed once
def test_scan_steps_through_the_same_training_as_the_loop(data_path):
    # train_loop=scan runs the steps between two evaluations in one lax.scan: the same batches in the same order,
    # so the same training up to float rounding. 25 steps, evaluations every 10: chunks of 10, 10 and 5
    code = (SEED_DIR / "cnn.py").read_text()
    loop, scan = (evaluate_source(code, data_path, steps=25, eval_every=10, train_loop=k) for k in ("loop", "scan"))
    assert scan["num_params"] == loop["num_params"]
    assert scan["final_train_loss"] == pytest.approx(loop["final_train_loss"], rel=1e-4)
    assert scan["val_accuracy"] == pytest.approx(loop["val_accuracy"], abs=0.005)
    with pytest.raises(ValueError, match=r"task\.train_loop"):
        evaluate_source(code, data_path, steps=5, train_loop="unrolled")


def test_train_loop_choice_per_backend():
    from evo.tasks.mnist1d.train import train_loop_for
    assert train_loop_for("auto", "cpu") == "loop"      # measured on this CPU
    assert train_loop_for("auto", "gpu") == "loop"      # not measured yet: the loop
    assert train_loop_for("scan", "cpu") == "scan"


@pytest.mark.slow
def test_seed_cnn_reaches_paper_accuracy(data_path):
    """The paper protocol (8000 AdamW steps, lr 0.01, batch 128): >= 88% best validation accuracy."""
    result = evaluate_source((SEED_DIR / "cnn.py").read_text(), data_path)
    assert result["num_params"] == 5210
    assert result["val_accuracy"] >= 0.88, result
    assert result["test_accuracy"] >= 0.85, result
    assert result["best_step"] % 250 == 0


# ---------------------------------------------------------------- failures


def test_channel_less_conv_is_batch_dependence(data_path):
    # nn.Conv on (batch, 40) treats the batch as the spatial axis: right shape, wrong model.
    code = child("    x = nn.relu(nn.Conv(16, kernel_size=(3,))(x))\n    return nn.Dense(10)(x)\n")
    assert failure(code, data_path).status == outcome.BATCH_DEPENDENCE


@pytest.mark.parametrize("body", [
    "    x = x - x.mean(axis=0)\n    return nn.Dense(10)(x)\n",  # batch statistics
    "    x = x + jnp.roll(x, 1, axis=0)\n    return nn.Dense(10)(x)\n",  # neighbour row
])
def test_other_cross_batch_models_are_batch_dependence(body, data_path):
    assert failure(child(body), data_path).status == outcome.BATCH_DEPENDENCE


@pytest.mark.parametrize("body", [
    "    x = nn.Dense(7)(x)\n    return x\n",  # 7 classes
    "    x = nn.Dense(10)(x)\n    return x.reshape(-1)\n",  # flattened logits
    "    x = nn.Dense(10)(x)\n    return jnp.squeeze(x)\n",  # breaks on a batch of 1
    "    x = nn.Dense(10)(x)\n    return x * jnp.nan\n",  # non-finite before any training
])
def test_wrong_shape_or_non_finite_output_is_shape_error(body, data_path):
    assert failure(child(body), data_path).status == outcome.SHAPE_ERROR


@pytest.mark.parametrize("body", [
    "    x = nn.Dense(10)(x)\n    return x * 1e30\n",  # finite logits, infinite loss at step 1
    # finite forward pass, but d/dx sqrt(0) = inf makes the gradient (and then the params) NaN
    "    x = nn.Dense(10)(x)\n    return x + 0.0 * jnp.sqrt(jnp.abs(x) - jnp.abs(x))\n",
])
def test_nan_during_training_is_nan(body, data_path):
    err = failure(child(body), data_path, steps=100, eval_every=50)
    assert err.status == outcome.NAN
    assert "step" in err.reason


@pytest.mark.parametrize("code, status", [
    ("class Model(nn.Module:\n  pass\n", outcome.SYNTAX_ERROR),
    ("import flax.linen as nn\nx = 1\n", outcome.BUILD_ERROR),  # no Model
    ("import flax.linen as nn\nraise RuntimeError('boom')\n", outcome.BUILD_ERROR),
    (child("    return nn.Dense(10)(x[:, :, None, 5])\n"), outcome.BUILD_ERROR),  # init raises
    (child("    x = nn.BatchNorm(use_running_average=False)(x)\n    return nn.Dense(10)(x)\n"),
     outcome.BUILD_ERROR),  # mutable state
    (child("    x = nn.Dropout(0.5, deterministic=False)(x)\n    return nn.Dense(10)(x)\n"),
     outcome.BUILD_ERROR),  # needs a dropout rng
])
def test_build_and_syntax_errors(code, status, data_path):
    err = failure(code, data_path)
    assert err.status == status
    assert err.reason and "\n" not in err.reason

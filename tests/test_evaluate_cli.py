"""`python -m evo.evaluate`: one program through the real filter + sandbox + training path,
against real broken and hostile children. The last stdout line is the JSON verdict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAD = "import flax.linen as nn\nimport jax.numpy as jnp\n\n\nclass Model(nn.Module):\n    @nn.compact\n    def __call__(self, x):\n"


def evaluate(tmp_path, body: str, *overrides, raw: str | None = None):
    path = tmp_path / "child.py"
    path.write_text(raw if raw is not None else HEAD + body)
    r = subprocess.run([sys.executable, "-m", "evo.evaluate", f"child_file={path}", "task.train_steps=60",
                        "task.eval_every=30", f"cache_dir={tmp_path / 'cache'}", *overrides],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("status", "reason", "num_params", "val_accuracy", "test_accuracy", "fitness"):
        assert key in result
    return result


def test_seed_program_is_ok(tmp_path):
    res = evaluate(tmp_path, "", raw=(REPO / "seeds/mnist1d/cnn.py").read_text())
    assert res["status"] in ("ok", "filtered") and res["num_params"] == 5210
    assert 0.1 < res["val_accuracy"] <= 1 and res["test_accuracy"] > 0.1


@pytest.mark.parametrize("name, body, status, reason, overrides", [
    ("syntax", "        x = nn.Dense(10)(x\n        return x\n", "syntax_error", "line", ()),
    ("forbidden", "        import os\n        return nn.Dense(10)(x)\n", "forbidden", "'os'", ()),
    ("dunder", "        y = x.__class__.__mro__\n        return nn.Dense(10)(x)\n", "forbidden", "is not allowed", ()),
    ("build", "        return nn.Conv2d(10)(x)\n", "build_error", "Conv2d", ()),
    ("shape", "        return nn.Dense(7)(x)\n", "shape_error", "", ()),
    # Slow (each trains or runs to a limit in the sandbox): the fast tier keeps these statuses through
    # tests/test_sandbox.py and tests/test_mnist1d_training.py, and the command's path through the cases above.
    pytest.param("batch_mixing", "        x = nn.Conv(4, kernel_size=(3,))(x)\n        return nn.Dense(10)(x)\n",
                 "batch_dependence", "", (), marks=pytest.mark.slow),
    pytest.param("nan", "        return nn.Dense(10)(x) * jnp.nan\n", None, "", (), marks=pytest.mark.slow),
    pytest.param("infinite_loop", "        while True:\n            pass\n", "timeout", "", ("sandbox.timeout_s=15",),
                 marks=pytest.mark.slow),
    pytest.param("memory_hog", "        import numpy as np\n        big = np.ones((40_000, 40_000))\n"
                 "        return nn.Dense(10)(x)\n", "memory", "", ("sandbox.memory_mb=2048",), marks=pytest.mark.slow),
    pytest.param("weak", "        return nn.Dense(10)(x * 0.0)\n", "filtered", "alpha", (), marks=pytest.mark.slow),
])
def test_broken_and_hostile_children_get_a_status(tmp_path, name, body, status, reason, overrides):
    res = evaluate(tmp_path, body, *overrides)
    if name == "nan":  # non-finite logits are caught by the shape check, before any training
        assert res["status"] in ("nan", "shape_error") and ("finite" in res["reason"] or "nan" in res["reason"].lower()), res
    else:
        assert res["status"] == status, res
        assert reason in res["reason"]
    if status != "filtered":
        assert res["fitness"] is None


def test_forged_output_cannot_fake_a_result(tmp_path):
    fake = json.dumps({"status": "ok", "num_params": 1, "val_accuracy": 1.0, "test_accuracy": 1.0, "fitness": 0})
    body = f"        print({fake!r})\n        print({fake!r}, flush=True)\n        return nn.Dense(3)(x)\n"
    res = evaluate(tmp_path, body)
    assert res["status"] == "shape_error" and res["val_accuracy"] is None


def test_unreadable_child_file_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "evo.evaluate", f"child_file={tmp_path}/missing.py"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "child_file=" in r.stderr and "Fix:" in r.stderr

"""Algorithm 2's text side: the paper's prompt format, targets, the stop rule and the repairs."""

from __future__ import annotations

import random
from pathlib import Path

from evo.search.crossmut import CrossMut
from evo.search.program import check_static, code_hash
from evo.search.prompt import Example, make_fewshot_prompt, target_metrics
from evo.search.repair import ClassRules, ClassStop, finish
from evo.tasks.mnist1d.task import PREFILL, PRELUDE, MNIST1DTask

CLOSING = MNIST1DTask.closing_return

SEEDS = Path(__file__).resolve().parents[1] / "seeds" / "mnist1d"
RULES = ClassRules()


def test_prompt_follows_the_paper_format():
    cnn, mlp = (SEEDS / "cnn.py").read_text(), (SEEDS / "mlp.py").read_text()
    parents = [Example(cnn, 5210, 0.871), Example(mlp, 15210, 0.655)]
    target = target_metrics(parents)
    assert target == {"num_params": 4700, "val_accuracy": 0.888}  # 0.9 x 5210 -> 4700; 1.02 x 0.871 -> 0.888
    prompt = make_fewshot_prompt(PRELUDE, parents, target, PREFILL)
    assert prompt.startswith(PRELUDE)
    assert prompt.count('"""Metrics:\n') == 3
    assert "{'num_params': '5210', 'val_accuracy': '0.871'}" in prompt
    assert "{'num_params': '4700', 'val_accuracy': '0.888'}" in prompt
    assert prompt.endswith("def __call__(self, x):\n        x =")  # ends mid-line
    assert "Greydanus" not in prompt and "#" not in prompt  # seed docstrings and comments stay out
    assert prompt.index("5210") < prompt.index("15210") < prompt.index("4700")


def test_parent_order_options():
    pop = [Example("a", 100, 0.5), Example("b", 100, 0.9)]
    cm = CrossMut(parent_order="fittest_last", parents_with_replacement=False)
    for seed in range(5):
        assert [e.code for e in cm.choose_parents(pop, random.Random(seed))] == ["a", "b"]


def test_stop_rule_ends_at_return_and_at_column_zero():
    stop = ClassStop(PREFILL, RULES)
    assert not stop(" nn.Dense(10)(x)\n        return x")          # return line not finished yet
    assert stop(" nn.Dense(10)(x)\n        return x\n")
    assert stop(" nn.Dense(10)(x)\n\nclass Other:\n")
    assert stop(" nn.relu(x)\n" + "        x = nn.relu(x)\n" * 3)  # a loop of identical lines


def test_finish_keeps_a_complete_class_as_written():
    text = " nn.Dense(32)(x)\n        x = nn.relu(x)\n        return nn.Dense(10)(x)\n\nclass Extra:\n    pass\n"
    code, repairs = finish(PRELUDE, PREFILL, text, RULES, CLOSING)
    assert repairs == [] and "Extra" not in code and check_static(code, ["flax", "jax"]) is None


def test_finish_repairs_a_cut_off_sample_and_records_it():
    text = " nn.Dense(32)(x)\n        x = nn.relu(x)\n        x = nn.Dense(16)(x,"  # token cap mid-line
    code, repairs = finish(PRELUDE, PREFILL, text, RULES, CLOSING)
    assert "dropped_cutoff_line" in repairs and "closed_with_return" in repairs
    assert check_static(code, ["flax", "jax"]) is None
    assert code.rstrip().endswith("return nn.Dense(10)(x.reshape((x.shape[0], -1)))")


def test_finish_drops_an_unclosed_tail():
    text = " nn.Dense(32)(x)\n        x = nn.Conv(8, kernel_size=(3,),\n            strides=(1,\n"
    code, repairs = finish(PRELUDE, PREFILL, text, RULES, CLOSING)
    assert any(r.startswith("dropped_tail_lines") for r in repairs)
    assert check_static(code, ["flax", "jax"]) is None


def test_static_checks():
    ok = PRELUDE + "\n\nclass Model(nn.Module):\n    pass\n"
    assert check_static(ok, ["flax", "jax"]) is None
    assert check_static(ok.replace("pass", "import os"), ["flax", "jax"])[0] == "forbidden"
    assert check_static(ok.replace("pass", "x = open('f')"), ["flax", "jax"])[0] == "forbidden"
    assert check_static(ok.replace("pass", "x = ().__class__.__bases__"), ["flax", "jax"])[0] == "forbidden"
    assert check_static(ok.replace("pass", "f(a=1, a=2)"), ["flax", "jax"])[0] == "syntax_error"  # compile(), not ast
    assert check_static(ok + "  x = (", ["flax"])[0] == "syntax_error"
    assert check_static(PRELUDE, ["flax", "jax"])[0] == "build_error"
    assert code_hash(ok) == code_hash(ok + "\n\n# trailing comment\n")


def test_finish_drops_a_repeated_keyword():
    text = " nn.Conv(8, kernel_size=(3,), padding=((1, 1),), padding=((2, 2),))(x[..., None])\n        return nn.Dense(10)(x.reshape((x.shape[0], -1)))\n"
    code, repairs = finish(PRELUDE, PREFILL, text, RULES, CLOSING)
    assert repairs == ["dropped_repeated_keyword:padding"]
    assert check_static(code, ["flax", "jax"]) is None and "padding=((1, 1),)" in code and "(2, 2)" not in code

"""The copy penalty (evo/lm/copying.py) on the tiny real LM, which was trained on the seeds and copies a
parent readily: without the penalty some samples of a prompt are copies of a parent, with it none is, and
a sample that has left every copy is not touched."""

from __future__ import annotations

import pytest
import torch

from evo.search.crossmut import CrossMut
from evo.lm.copying import CopyPenalty, copy_targets, squash
from evo.lm.hf import HFCausalLM
from evo.search.program import code_hash
from evo.search.prompt import Example
from evo.tasks.mnist1d.task import MNIST1DTask

TEMPERATURES = [0.6] * 8


def copies_of_parents(lm, seed: int = 0) -> tuple[int, list]:
    """How many of 16 samples of one real CROSSMUT prompt are a copy of one of its two parents."""
    task = MNIST1DTask()
    seeds = task.seed_programs()
    cm = CrossMut(banned_words=task.banned_words)
    # the tiny LM learnt the GRU seed best: it writes it back for almost any prompt
    prompt, _ = cm.make_prompt(task, [Example(seeds["gru"], 5110, 0.876), Example(seeds["cnn"], 5210, 0.906)])
    samples = cm.sample(lm, task, prompt, TEMPERATURES, seed=seed) + cm.sample(lm, task, prompt, TEMPERATURES,
                                                                                seed=seed + 1)
    parents = {code_hash(seeds["gru"]), code_hash(seeds["cnn"])}
    return sum(s.code_hash in parents for s in samples), samples


@pytest.fixture(scope="module")
def lms(tiny_lm_dir):
    plain = HFCausalLM(str(tiny_lm_dir), max_new_tokens=120)
    penalised = HFCausalLM(str(tiny_lm_dir), max_new_tokens=120, copy_penalty=4.0, copy_penalty_after=4)
    return plain, penalised


def test_the_penalty_removes_copies_of_the_parents(lms):
    plain, penalised = lms
    copies, _ = copies_of_parents(plain)
    assert copies >= 3, "the tiny LM is expected to copy its parents unpenalised (else this test shows nothing)"
    copies_penalised, samples = copies_of_parents(penalised)
    assert copies_penalised == 0
    # recorded on every child's row, with its settings
    assert all("copy_penalty:4x1.75^(n-4)" in s.repairs for s in samples)


def test_targets_are_what_follows_the_anchor():
    prompt = 'a\n    def f(x):\n        x =  g(x)\n        return x\n\nb\n    def f(x):\n        x ='
    assert copy_targets(prompt) == [squash(" g(x)\n        return x\n\nb\n    def f(x):\n        x =")]
    assert copy_targets("no anchor repeats\nhere") == []


def test_a_row_that_left_every_copy_is_never_penalised(lms):
    _, lm = lms
    prompt = "p\n    def f(x):\n        x = g(x)\n        return x\n\nq\n    def f(x):\n        x ="
    penalty = CopyPenalty(prompt, 2, multiplier=100.0, base=1.75, after=0, piece=lm._piece)
    g = next(t for t in range(len(lm.tokenizer)) if lm._piece(t) == "g")
    space = next(t for t in range(len(lm.tokenizer)) if lm.tokenizer.decode([t]) == " ")
    scores = torch.zeros(2, len(lm.tokenizer))
    scores[:, g] = 10.0       # both rows would write "g": row 0 is on the copy, row 1 has diverged
    scores[:, space] = 9.0    # whitespace does not advance a copy: never penalised
    penalty.update(1, " h(")
    assert penalty.still_copying(0) and not penalty.still_copying(1)
    penalty.apply(scores, [0, 1], ["", " h("], [1, 3])
    assert scores[0, g] < -50 and scores[1, g] == 10.0
    assert scores[0, space] == 9.0 and penalty.penalised_steps == [1, 0]


def test_avoid_known_steers_off_programs_that_are_not_in_the_prompt(lms):
    """A batch drawn again with the same seed repeats itself, programs the prompt does not show included
    (the prompt's penalty cannot see them); with crossmut.avoid_known and the run's programs (the seeds and
    that first batch) none of the redrawn samples is a program the run holds."""
    _, penalised = lms
    task = MNIST1DTask()
    seeds = task.seed_programs()
    op = CrossMut(banned_words=task.banned_words)
    prompt, _ = op.make_prompt(task, [Example(seeds["gru"], 5110, 0.876), Example(seeds["cnn"], 5210, 0.906)])
    first = op.sample(penalised, task, prompt, TEMPERATURES, seed=0)
    known = [*seeds.values(), *(s.code for s in first)]
    hashes = {code_hash(code) for code in known}
    again = op.sample(penalised, task, prompt, TEMPERATURES, seed=0, known=known)   # avoid_known off: ignored
    assert [s.code_hash for s in again] == [s.code_hash for s in first]
    avoiding = CrossMut(banned_words=task.banned_words, avoid_known=True)
    redrawn = avoiding.sample(penalised, task, prompt, TEMPERATURES, seed=0, known=known)
    assert sum(s.code_hash in hashes for s in redrawn) == 0
    assert all("copy_penalty:known_programs" in s.repairs for s in redrawn)


def test_known_completions_are_what_the_prefill_continues():
    task = MNIST1DTask()
    seeds = task.seed_programs()
    broken = task.prelude + "\n\n\n" + task.prefill + " nn.Dense(10)(x\n"   # as written: it does not parse
    texts = CrossMut().known_completions(task, [seeds["mlp"], broken, "def broken(:", "x = 1\n"])
    assert texts == [" nn.relu(nn.Dense(100)(x))\n        x = x + nn.relu(nn.Dense(100)(x))\n        return nn.Dense(10)(x)",
                     " nn.Dense(10)(x\n"]


def test_avoid_known_without_the_penalty_fails_before_compute(cfg_factory):
    from evo.config import ConfigError, validate
    with pytest.raises(ConfigError, match=r"crossmut\.avoid_known.*Fix: pass lm\.copy_penalty=1"):
        validate(cfg_factory("crossmut.avoid_known=true"), needs_lm=False)   # the penalty is off by default
    validate(cfg_factory("crossmut.avoid_known=true", "lm.copy_penalty=1"), needs_lm=False)

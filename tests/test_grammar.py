"""The MNIST-1D child grammar (evo/tasks/mnist1d/grammar.py) through llguidance, the library the
sampler enforces it with: it accepts the seeds, refuses invented keywords and names, its keywords are
the installed flax's, and constrained sampling with the tiny real LM writes only text it accepts."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from evo.search.crossmut import CrossMut
from evo.lm.hf import HFCausalLM
from evo.search.prompt import normalise_entry
from evo.tasks.mnist1d.grammar import LAYERS, lark_grammar
from evo.tasks.mnist1d.task import PREFILL, MNIST1DTask
from grammar_check import grammar_accepts

SEEDS = Path(__file__).resolve().parents[1] / "seeds" / "mnist1d"


@pytest.fixture(scope="module")
def tiny(tiny_lm_dir):
    return HFCausalLM(str(tiny_lm_dir), max_new_tokens=80)


def accepts(lm, text: str) -> bool:
    return grammar_accepts(lm, lark_grammar(), text)


def seed_completion(path: Path) -> str:
    text = normalise_entry(path.read_text())   # as the prompt shows a parent
    assert text.startswith(PREFILL)
    return text[len(PREFILL):] + "\n"


@pytest.mark.parametrize("seed", sorted(p.stem for p in SEEDS.glob("*.py")))
def test_grammar_accepts_every_seed(tiny, seed):
    assert accepts(tiny, seed_completion(SEEDS / f"{seed}.py"))


def test_grammar_rejects_invented_keywords_and_names(tiny):
    cnn = seed_completion(SEEDS / "cnn.py")
    assert accepts(tiny, cnn)
    assert not accepts(tiny, cnn.replace("kernel_size=(5,)", "kernel_size=(5,), in_dim=1"))   # no such keyword
    assert not accepts(tiny, cnn.replace("nn.Conv(25", "nn.Conv1d(25"))                        # no such layer
    undefined = cnn.replace("(x))\n", "(in_planes))\n", 1)
    assert undefined != cnn and not accepts(tiny, undefined)                                   # undefined name
    assert not accepts(tiny, cnn.replace("return nn.Dense(10)(x)\n", ""))                      # no return


def test_grammar_tracks_the_rank_of_x(tiny):
    """What the last grammar run's shape errors wrote cannot be written; each refusal has an accepted
    control one edit away, so the rule refuses the error and not the layer."""
    cnn, mlp, gru, res = (seed_completion(SEEDS / f"{s}.py") for s in ("cnn", "mlp", "gru", "residual_cnn"))
    pool = "        x = nn.avg_pool(x, (2,))\n"
    first_conv = cnn.split("\n")[1] + "\n"
    assert accepts(tiny, cnn.replace(first_conv, first_conv + pool))       # a pool over the length axis
    assert not accepts(tiny, mlp.replace("        return", pool + "        return"))   # a pool of a flat x
    assert not accepts(tiny, mlp.replace("nn.relu(nn.Dense(100)(x))\n", "nn.Conv(8, kernel_size=3)(x)\n", 1))
    assert accepts(tiny, cnn.replace("kernel_size=(5,)", "kernel_size=5"))     # flax takes an int kernel
    assert not accepts(tiny, cnn.replace("kernel_size=(5,)", "kernel_size=(5, 5)"))   # a 2-d kernel
    assert not accepts(tiny, res.replace("window_shape=(2,)", "window_shape=2", 1))   # pools take tuples
    assert not accepts(tiny, cnn.replace("return nn.Dense(10)(x)", "return nn.Dense(1)(x)"))   # not 10 logits
    flatten = "        x = jnp.reshape(x, (x.shape[0], -1))\n"
    assert flatten in cnn and not accepts(tiny, cnn.replace(flatten, ""))     # the head of an unflattened x
    assert accepts(tiny, cnn.replace(flatten, "        x = jnp.mean(x, axis=1)\n"))   # a reduction flattens too
    assert accepts(tiny, gru.replace("nn.GRUCell(6))", "nn.GRUCell(6), return_carry=False)"))
    assert not accepts(tiny, gru.replace("nn.GRUCell(6))", "nn.GRUCell(6), return_carry=True)"))   # a tuple


def test_layer_keywords_are_the_installed_signatures():
    import flax.linen as nn
    grammar = lark_grammar()
    for layer in LAYERS:
        rule = re.search(rf"^{layer.lower()}(_kw|_kwarg)?:.*$", grammar, re.M)
        lines = [l for l in grammar.splitlines() if l.startswith((f"{layer.lower()}:", f"{layer.lower()}_kw"))]
        written = set(re.findall(r'"(?:, )?([a-z_]+)="', " ".join(lines)))
        assert rule and written, layer
        assert written <= set(inspect.signature(getattr(nn, layer)).parameters), (layer, written)
    assert '"kernel_size="' in grammar and '"features="' in grammar


@pytest.mark.parametrize("head_vocab", ["full", "code"])
def test_constrained_sampling_writes_only_the_grammar(tiny, tiny_lm_dir, head_vocab):
    """Also with the code-token head, whose kept ids need not hold the token the grammar forces."""
    if head_vocab == "code":
        tiny = HFCausalLM(str(tiny_lm_dir), max_new_tokens=80, head_vocab="code")
    task = MNIST1DTask(train_steps=10)
    op = CrossMut(samples_per_prompt=6, constrain="grammar", max_body_lines=40)
    seeds = task.seed_programs()
    from evo.search.prompt import Example
    parents = [Example(code=seeds["cnn"], num_params=5210, val_accuracy=0.92),
               Example(code=seeds["mlp"], num_params=15210, val_accuracy=0.64)]
    prompt, _ = op.make_prompt(task, parents)
    samples = op.sample(tiny, task, prompt, [0.6, 0.8, 1.0, 1.0, 1.2, 1.5], seed=0)
    finished = 0
    for s in samples:
        assert s.repairs[0] == "constrained:grammar"
        text = s.completion.text
        if s.completion.stop_reason in ("rule", "grammar"):   # ended at its return line
            finished += 1
            assert accepts(tiny, text), text
        else:   # cut at the token cap: still a prefix the grammar can continue
            matcher = tiny._matcher(lark_grammar())
            assert matcher.consume_tokens(tiny.tokenizer(text, add_special_tokens=False).input_ids), text
        ast.parse(s.code)   # every constrained sample is a program (after the usual repairs)
    assert finished >= 1

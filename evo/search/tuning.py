"""Soft prompt tuning of the code LM between rounds (EvoPrompting, Algorithm 1 line 11).

    theta_{t+1} <- TRAIN(theta_t, C_ev \\ P)

After each round the LM's *soft prompt* (``num_virtual_tokens`` learned input embeddings put in
front of every prompt) is trained with the causal-LM loss on this round's filtered children that
were not picked as parents. The LM's own weights never change. Paper values (section 6 of the
notes): 16 virtual tokens, 5 epochs, batch 16, learning rate 0.1.

Usage from the search loop::

    tuner = SoftPromptTuner(lm, PromptTuningConfig(), seed=cfg.seed)   # once, after loading the LM
    ...
    losses = tuner.train(texts, seed=round_seed)   # texts: programs in the prompt format
    tuner.save(run_dir / "soft_prompt" / f"round_{t}")
    tuner.activate()                               # lm.sample now samples with the soft prompt

``train`` continues from the current soft prompt (theta_t), so calling it once per round is the
paper's TRAIN. ``activate`` swaps ``lm.model`` for the peft ``PeftModel``; ``HFCausalLM.sample``
then works unchanged: the returned sequences hold the real prompt tokens and the new tokens only,
never the virtual tokens, so its ``prompt_len`` slicing stays right (the virtual tokens are
embeddings spliced in front of the prompt's embeddings inside ``prepare_inputs_for_generation``).

Choices the paper does not state (config values, documented here):
- Optimiser: AdamW, no weight decay, constant learning rate, gradient norm clipped to 1.0 (the
  Hugging Face Trainer defaults, but without its linear decay). A fresh optimiser each round.
- Loss: mean token cross-entropy over the real tokens of a batch (padding excluded), every token
  but a text's first: the prompt always supplies that one at sampling time (Gemma: BOS), and the
  loss is then the same quantity as the base model's causal-LM loss (``loss(texts,
  with_prompt=False)``), so "does the tuned prompt fit the programs better than no prompt" is one
  comparison. (peft's own forward with labels would also score the first token.)
- Batches: a fresh permutation of the texts each epoch drawn from ``seed``; the last batch of an
  epoch may be smaller. A batch is run in micro-batches of ``micro_batch_size`` texts (gradient
  accumulation): same loss and gradient up to rounding, bounded memory (Gemma's 262k-entry
  vocabulary makes the logits the largest tensor by far). On this CPU 1 is fastest: Gemma-270M,
  4 texts of 400 tokens, one step: 21.6 s at 1, 26.6 s at 2, 33.8 s at 4, the difference being
  kernel time spent faulting in the multi-GB logits buffers (``THP_MEM_ALLOC_ENABLE=1`` in the
  environment of the process, set before torch starts, cut 21.6 s to 16.5 s). On a GPU use more.
- The base model stays in eval mode while tuning (no dropout): training is deterministic for a
  seed and a base model's dropout would only add noise to a frozen network.
- ``init="vocab"`` is the default: on Gemma-270M and 16 programs its loss starts at 1.6 nats per
  token against 5.0 for ``random``, so a prompt tuned for only 5 epochs on a few programs does
  not push the next round's samples off the code distribution. (peft's own default is random.)
- ``init="random"``: i.i.d. normal values with the standard deviation of the model's input
  embeddings (as the model scales them: Gemma multiplies by sqrt(hidden), std ~1.0, which is what
  peft's RANDOM init draws; GPT-2-like models have std ~0.1, where N(0, 1) would be far out of
  range). ``init="vocab"``: the input embeddings of ``num_virtual_tokens`` tokens drawn uniformly
  from the tokenizer's vocabulary (Lester et al.'s sampled-vocabulary init). Neither reloads the
  tokenizer, so both work for GGUF-converted models (peft's TEXT init does reload it).
- Texts are tokenized exactly as ``HFCausalLM.sample`` tokenizes a prompt (with the tokenizer's
  special tokens, e.g. Gemma's BOS) and truncated to ``max_length`` tokens (and to the model's
  position limit minus the virtual tokens); no EOS is appended.

peft 0.21.2 with transformers 5.24 (which passes the generation cache to
``prepare_inputs_for_generation`` as ``cache``, where peft looks for ``past_key_values``)
re-injects the virtual tokens at *every* decoding step when the KV cache is on (the cache grows
by 16 + 1 positions per token), so cached generation silently diverges from the model after a
few tokens.
``SoftPromptTuner`` therefore installs its own ``prepare_inputs_for_generation`` on the PeftModel
(``_install_generation_fix``) that injects the soft prompt only in the prefill step; the test suite
checks that cached sampling equals a token-by-token forward pass.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from omegaconf import OmegaConf

from evo.errors import ConfigError

STATE_FILE = "tuner_state.json"   # evo's own record next to peft's adapter files


@dataclass(frozen=True)
class PromptTuningConfig:
    """Algorithm 1 line 11, TRAIN(theta, C_ev \\ P). These fields are also the ``soft_prompt`` config node
    (evo.config's schema): their defaults are the config's, the paper's unless marked [not in paper]."""
    enabled: bool = True           # false: no TRAIN step, every round samples the base LM (ablation=no_prompt_tuning)
    num_virtual_tokens: int = 16   # learned input embeddings put in front of every prompt
    epochs: int = 5                # over this round's scored children that were not chosen as parents
    batch_size: int = 16
    learning_rate: float = 0.1     # AdamW, constant
    max_length: int = 1024         # [not in paper] training texts are truncated to this many tokens
    init: str = "vocab"            # [not in paper] vocab: embeddings of random vocabulary tokens (loss starts far
                                   #   lower); random (see the module docstring)
    micro_batch_size: int = 1      # [not in paper] texts per forward pass inside a batch: memory/speed only (1 is
                                   #   fastest on a CPU)
    weight_decay: float = 0.0      # [not in paper] AdamW
    max_grad_norm: float = 1.0     # [not in paper] gradient clipping of the soft prompt; 0 disables

    def __post_init__(self):
        if self.init not in ("random", "vocab"):
            raise ValueError(f"PromptTuningConfig.init={self.init!r}: use 'random' or 'vocab'.")
        for name in ("num_virtual_tokens", "epochs", "batch_size", "max_length", "micro_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"PromptTuningConfig.{name} must be >= 1, got {getattr(self, name)!r}.")
        if not self.learning_rate > 0:
            raise ValueError(f"PromptTuningConfig.learning_rate must be > 0, got {self.learning_rate!r}.")

    @classmethod
    def check_config(cls, node, cfg) -> None:
        """The ``soft_prompt`` node, before any compute (evo.config.validate asks): this class's own checks."""
        try:
            cls(**OmegaConf.to_container(node))
        except ValueError as exc:
            raise ConfigError(f"Invalid configuration: {str(exc).replace('PromptTuningConfig.', 'soft_prompt.')} "
                              "Fix: use a value as documented in conf/config.yaml (soft_prompt: the paper's "
                              "16 tokens, 5 epochs, batch 16, lr 0.1).") from None


def _max_positions(config) -> Optional[int]:
    """The model's absolute position limit if it has one (GPT-2: n_positions), else None."""
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _install_generation_fix(peft_model, num_virtual_tokens: int) -> None:
    """Replace peft's prompt-learning ``prepare_inputs_for_generation`` on this instance.

    Behaviour: in the prefill step (empty cache) the soft prompt's embeddings are put in front of
    the prompt's token embeddings; in every later step only the new token is fed (the virtual
    tokens are already in the KV cache). The 2-D attention mask gets ``num_virtual_tokens`` leading
    ones in every step. Position ids are dropped (as peft does) so the model counts positions from
    the cache length: right for unpadded prompts, which is what ``HFCausalLM.sample`` passes.
    Works with the cache under either name (``cache`` in transformers >= 5.24, ``past_key_values``
    before). ``PeftModelForCausalLM.generate`` looks the method up on the instance, so setting it
    here is enough.
    """
    # torch (and peft) are optional: lm=openai runs without them
    import torch

    def cache_length(cache) -> int:
        if cache is None:
            return 0
        if hasattr(cache, "get_seq_length"):
            return int(cache.get_seq_length())
        if isinstance(cache, (tuple, list)) and cache and cache[0] is not None:  # legacy tuple cache
            return int(cache[0][0].shape[-2])
        return 0

    def prepare_inputs_for_generation(*args, task_ids=None, **kwargs):
        model_kwargs = peft_model.base_model_prepare_inputs_for_generation(*args, **kwargs)
        cache_key = "cache" if "cache" in model_kwargs else "past_key_values"
        past = cache_length(model_kwargs.get(cache_key))
        input_ids = model_kwargs.get("input_ids")
        if past and input_ids is not None and input_ids.shape[1] > 1 and past >= input_ids.shape[1]:
            model_kwargs["input_ids"] = input_ids = input_ids[:, -1:]   # older transformers: unsliced ids

        mask = model_kwargs.get("attention_mask")
        if mask is not None:
            if isinstance(mask, dict) or mask.dim() != 2:
                raise NotImplementedError(
                    "Soft-prompt generation supports 2-D attention masks (dynamic KV cache) only; got "
                    f"{type(mask).__name__} {getattr(mask, 'shape', '')}. Use the default cache.")
            prefix = torch.ones(mask.shape[0], num_virtual_tokens, dtype=mask.dtype, device=mask.device)
            model_kwargs["attention_mask"] = torch.cat((prefix, mask), dim=1)
        if model_kwargs.get("position_ids") is not None:
            model_kwargs["position_ids"] = None
        model_kwargs.pop("cache_position", None)   # transformers < 5.24 recomputes it from the embeddings
        if model_kwargs.get("token_type_ids") is not None:
            model_kwargs["token_type_ids"] = None

        if past == 0:   # prefill: splice the soft prompt in front of the prompt
            embeds = model_kwargs.get("inputs_embeds")
            if embeds is None:
                embeds = peft_model.word_embeddings(input_ids)
            prompts = peft_model.get_prompt(batch_size=embeds.shape[0]).to(embeds.dtype)
            model_kwargs["inputs_embeds"] = torch.cat((prompts, embeds), dim=1)
            model_kwargs["input_ids"] = None
        return model_kwargs

    peft_model.prepare_inputs_for_generation = prepare_inputs_for_generation


class SoftPromptTuner:
    """A trainable soft prompt in front of an ``HFCausalLM``'s model (peft prompt tuning).

    ``lm.model`` is left as the plain base model until ``activate()``. Only the
    ``num_virtual_tokens x hidden`` prompt values are trainable; the base weights are frozen
    (``requires_grad=False``, also after ``deactivate()``: the LM is only sampled from).
    """

    def __init__(self, lm, cfg: PromptTuningConfig = PromptTuningConfig(), seed: int = 0):
        # torch (and peft) are optional: lm=openai runs without them
        import torch
        from peft import PeftModel, PromptTuningInit, get_peft_model
        from peft import PromptTuningConfig as PeftPromptTuningConfig

        if isinstance(lm.model, PeftModel):
            raise ValueError("lm.model is already a PeftModel: give SoftPromptTuner the plain LM "
                             "(one tuner per HFCausalLM).")
        self.lm, self.cfg, self.seed = lm, cfg, seed
        self.base_model = lm.model
        peft_cfg = PeftPromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=cfg.num_virtual_tokens,
                                          prompt_tuning_init=PromptTuningInit.RANDOM)
        with torch.random.fork_rng(devices=[]):   # peft's own init draws from the global RNG
            torch.manual_seed(seed)
            self.peft_model = get_peft_model(self.base_model, peft_cfg)
        # peft registers a hook that makes the input embeddings require grad (for gradient
        # checkpointing); prompt tuning does not need it, and it would stay on the base model.
        if hasattr(self.base_model, "disable_input_require_grads"):
            self.base_model.disable_input_require_grads()
        _install_generation_fix(self.peft_model, cfg.num_virtual_tokens)
        self.peft_model.eval()
        self._init_prompt(seed)
        self.rounds = 0          # completed train() calls
        self.steps = 0           # optimiser steps over all rounds
        self.history: list[dict[str, Any]] = []   # one entry per train() call
        self.epoch_losses: list[float] = []       # per-epoch mean token loss of the last train()

    # -- the soft prompt ---------------------------------------------------------------------------
    @property
    def prompt_weight(self):
        """The trainable (num_virtual_tokens, hidden) float32 tensor."""
        return self.peft_model.prompt_encoder[self.peft_model.active_adapter].embedding.weight

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.peft_model.parameters() if p.requires_grad)

    def _init_prompt(self, seed: int) -> None:
        # torch (and peft) are optional: lm=openai runs without them
        import torch
        emb = self.peft_model.word_embeddings
        weight = self.prompt_weight
        n, _ = weight.shape
        vocab = min(int(emb.weight.shape[0]), len(self.lm.tokenizer))
        gen = torch.Generator().manual_seed(int(seed))
        device = emb.weight.device
        with torch.no_grad():
            if self.cfg.init == "vocab":
                ids = torch.randint(0, vocab, (n,), generator=gen)
                values = emb(ids.to(device)).float()
            else:
                probe = torch.randint(0, vocab, (min(vocab, 4096),), generator=gen)
                sigma = emb(probe.to(device)).float().std().item()
                values = torch.randn(weight.shape, generator=gen) * sigma
            weight.copy_(values.to(weight.device, weight.dtype))

    # -- switching sampling on and off ---------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.lm.model is self.peft_model

    def activate(self) -> None:
        """From now on ``lm.sample`` samples with the soft prompt (``lm.model`` is the PeftModel)."""
        self.peft_model.eval()
        self.lm.model = self.peft_model

    def deactivate(self) -> None:
        """``lm.sample`` samples from the plain base model again."""
        self.lm.model = self.base_model

    # -- training ----------------------------------------------------------------------------------
    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids as ``HFCausalLM.sample`` makes them, truncated; texts of < 2 tokens dropped."""
        limit = self.cfg.max_length
        max_pos = _max_positions(self.base_model.config)
        if max_pos is not None:
            limit = min(limit, max_pos - self.cfg.num_virtual_tokens)
        encoded = [list(self.lm.tokenizer(t).input_ids)[:limit] for t in texts]
        return [ids for ids in encoded if len(ids) >= 2]

    def _pad_id(self) -> int:
        tok = self.lm.tokenizer
        for value in (tok.pad_token_id, tok.eos_token_id, 0):
            if value is not None:
                return int(value)
        return 0

    def _nll(self, rows: list[list[int]], with_prompt: bool = True):
        """Summed cross-entropy of tokens 1..L-1 of each row (right-padded batch).

        Token 0 is never scored: at sampling time the prompt always supplies it (Gemma: BOS), so
        the loss is the same quantity as the base model's causal-LM loss (``with_prompt=False``).
        """
        # torch (and peft) are optional: lm=openai runs without them
        import torch
        import torch.nn.functional as F

        device = self.prompt_weight.device
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self._pad_id(), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, :len(row)] = torch.tensor(row)
            mask[r, :len(row)] = 1
            labels[r, 1:len(row)] = ids[r, 1:len(row)]
        ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
        if with_prompt:
            # Output position n_virtual + j (the real token j) predicts real token j + 1.
            n_virtual = self.cfg.num_virtual_tokens
            logits = self.peft_model(input_ids=ids, attention_mask=mask).logits
            logits = logits[:, n_virtual:n_virtual + width - 1]
        else:
            logits = self.base_model(input_ids=ids, attention_mask=mask).logits[:, :width - 1]
        logits = logits.float()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                               ignore_index=-100, reduction="sum")

    def loss(self, texts: Sequence[str], with_prompt: bool = True) -> float:
        """Mean cross-entropy per scored token (nats) of ``texts`` with the current soft prompt, or
        of the plain base model (``with_prompt=False``): the number that says whether tuning helps."""
        # torch (and peft) are optional: lm=openai runs without them
        import torch

        encoded = self._encode(texts)
        if not encoded:
            return float("nan")
        total, tokens = 0.0, 0
        order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i]), i))
        with torch.no_grad():
            for m in range(0, len(order), self.cfg.micro_batch_size):
                rows = [encoded[i] for i in order[m:m + self.cfg.micro_batch_size]]
                total += float(self._nll(rows, with_prompt))
                tokens += sum(len(r) - 1 for r in rows)
        return total / tokens

    def reset(self) -> None:
        """Back to the initial soft prompt (after a diverged training), sampling with the base model."""
        self._init_prompt(self.seed)
        self.deactivate()

    def train(self, texts: Sequence[str], seed: int,
              on_step: Optional[Callable[[float], None]] = None) -> list[float]:
        """Train the soft prompt on ``texts`` for ``cfg.epochs`` epochs, starting from the current one.

        Returns the loss of every optimisation step (mean cross-entropy per scored token of that
        batch, in nats, measured before the step), ``ceil(len(texts) / batch_size) * epochs``
        values. The per-epoch means are in ``self.epoch_losses``; a summary of the call is
        appended to ``self.history``. Deterministic for a given starting prompt, ``texts`` and
        ``seed`` (same machine, same thread count). No usable texts: nothing changes, ``[]``.
        ``on_step(loss)`` is called after each optimiser step (progress bars).
        """
        # torch (and peft) are optional: lm=openai runs without them
        import torch

        cfg = self.cfg
        encoded = self._encode(texts)
        if not encoded:
            self.epoch_losses = []
            return []
        was_active = self.active
        for p in self.base_model.parameters():
            p.requires_grad_(False)
        weight = self.prompt_weight
        weight.requires_grad_(True)
        optimizer = torch.optim.AdamW([weight], lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        gen = torch.Generator().manual_seed(int(seed))
        self.peft_model.eval()   # no dropout (see the module docstring)

        step_losses: list[float] = []
        epoch_losses: list[float] = []
        t0 = time.time()
        for _ in range(cfg.epochs):
            order = torch.randperm(len(encoded), generator=gen).tolist()
            epoch_nll, epoch_tokens = 0.0, 0
            for start in range(0, len(order), cfg.batch_size):
                batch = order[start:start + cfg.batch_size]
                n_tokens = sum(len(encoded[i]) - 1 for i in batch)
                # Micro-batches of similar lengths waste less compute on padding.
                batch = sorted(batch, key=lambda i: (len(encoded[i]), i))
                optimizer.zero_grad(set_to_none=True)
                batch_nll = 0.0
                for m in range(0, len(batch), cfg.micro_batch_size):
                    nll = self._nll([encoded[i] for i in batch[m:m + cfg.micro_batch_size]])
                    (nll / n_tokens).backward()
                    batch_nll += float(nll.detach())
                    del nll
                if cfg.max_grad_norm and cfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_([weight], cfg.max_grad_norm)
                optimizer.step()
                step_losses.append(batch_nll / n_tokens)
                if on_step is not None:
                    on_step(step_losses[-1])
                epoch_nll += batch_nll
                epoch_tokens += n_tokens
            epoch_losses.append(epoch_nll / epoch_tokens)
        optimizer.zero_grad(set_to_none=True)
        weight.grad = None
        self.peft_model.eval()
        if was_active:
            self.lm.model = self.peft_model
        seconds = time.time() - t0
        self.rounds += 1
        self.steps += len(step_losses)
        self.epoch_losses = epoch_losses
        self.history.append({
            "round": self.rounds, "seed": int(seed), "texts": len(encoded),
            "tokens": sum(len(e) for e in encoded), "steps": len(step_losses),
            "epoch_losses": epoch_losses, "seconds": seconds,
            "finite": all(math.isfinite(x) for x in step_losses),
        })
        return step_losses

    # -- persistence -------------------------------------------------------------------------------
    def save(self, folder) -> None:
        """Write peft's adapter files (``adapter_config.json``, ``adapter_model.safetensors``; ~40 KB
        for Gemma-270M) plus ``tuner_state.json`` (config, rounds, history) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.peft_model.save_pretrained(str(folder))
        state = {"config": asdict(self.cfg), "seed": self.seed, "rounds": self.rounds, "steps": self.steps,
                 "history": self.history, "lm": getattr(self.lm, "name", None)}
        tmp = folder / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(folder / STATE_FILE)

    def load(self, folder) -> None:
        """Restore a soft prompt written by ``save`` (identical values, hence identical logits).

        The folder must hold a prompt-tuning adapter with this tuner's number of virtual tokens
        and the base model's hidden size. ``rounds``/``steps``/``history`` are restored from
        ``tuner_state.json`` when present.
        """
        # torch (and peft) are optional: lm=openai runs without them
        import torch
        from peft.utils import load_peft_weights, set_peft_model_state_dict

        folder = Path(folder)
        config_path = folder / "adapter_config.json"
        if not config_path.exists():
            raise FileNotFoundError(f"{folder} holds no adapter_config.json: not a saved soft prompt.")
        saved = json.loads(config_path.read_text())
        if str(saved.get("peft_type", "")).upper() != "PROMPT_TUNING":
            raise ValueError(f"{folder} holds a {saved.get('peft_type')} adapter, not a prompt-tuning one.")
        rows, hidden = self.prompt_weight.shape
        if saved.get("num_virtual_tokens") != rows or saved.get("token_dim") not in (None, hidden):
            raise ValueError(
                f"{folder}: soft prompt of {saved.get('num_virtual_tokens')} x {saved.get('token_dim')} values, "
                f"this tuner expects {rows} x {hidden} (num_virtual_tokens, hidden size of the base model).")
        weights = load_peft_weights(str(folder), device="cpu")
        if "prompt_embeddings" in weights:
            values = weights["prompt_embeddings"]
            if tuple(values.shape) != (rows, hidden):
                raise ValueError(f"{folder}: prompt_embeddings has shape {tuple(values.shape)}, expected {(rows, hidden)}.")
            with torch.no_grad():
                self.prompt_weight.copy_(values.to(self.prompt_weight.device, self.prompt_weight.dtype))
        else:   # a future peft naming: let peft map it
            set_peft_model_state_dict(self.peft_model, weights)
        state_path = folder / STATE_FILE
        if state_path.exists():
            state = json.loads(state_path.read_text())
            self.rounds = int(state.get("rounds", 0))
            self.steps = int(state.get("steps", 0))
            self.history = list(state.get("history", []))
        self.peft_model.eval()

"""What the search needs from a language model: batched sampling of one prompt.

A backend is any object with ``name`` and ``sample``. The crossover/mutation operator
(``evo.search.crossmut``) owns the prompt and the stopping rule; the backend owns tokens and devices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence


class LMUnavailableError(RuntimeError):
    """The configured model cannot be loaded here; the message says what to do."""


@dataclass
class Completion:
    text: str            # generated text only, without the prompt (not yet cut at the stop point)
    temperature: float
    tokens_in: int       # prompt tokens
    tokens_out: int      # generated tokens of this sequence (up to its stop)
    stop_reason: str     # "rule" (the operator's stop rule fired), "eos" or "max_tokens"
    seconds: float       # this sequence's share of the batch's wall time


# Returns True once a sequence is complete (e.g. the class body is closed).
StopRule = Callable[[str], bool]


class LanguageModel(Protocol):
    name: str

    def sample(self, prompt: str, temperatures: Sequence[float], seed: int,
               stop: Optional[StopRule] = None, bad_words: Sequence[str] = ()) -> list[Completion]:
        """One completion per temperature, sampled as one batch, reproducible from ``seed``."""
        ...

    def share_gpu(self, fraction: float) -> str:
        """Keep to ``fraction`` of the GPU it runs on (children share that GPU: evo/search/devices.py); returns
        what was done, for the run log."""
        ...

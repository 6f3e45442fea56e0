"""Copy penalty: push a sample off a verbatim copy of a program in its prompt. [not in paper]

Gemma-270M copies one of its in-context parents in about a third of its samples at the demo's settings
(benchmarks/operator_yield.py), and under the task grammar in about half. A copy costs its LM time and
adds nothing: the archive already holds that program.

This is DRY ("don't repeat yourself": p-e-w's sampler, text-generation-webui PR 5677, llama.cpp's
``dry_multiplier`` / ``dry_base`` / ``dry_allowed_length``) narrowed to what a copy is. DRY penalises every
token that extends any repeated sequence, which in code also punishes the boilerplate every program
shares. Here a row is penalised only while its whole completion so far could still end as a copy: while it
is, modulo whitespace, a prefix of what follows one of the prompt's earlier programs at the place the
prompt leaves off (its last two lines are the anchor: for MNIST-1D ``def __call__(self, x):`` and
``x =``). Once the row has written ``after`` tokens, each candidate token that keeps it on such a copy loses
``multiplier * base ** (written - after)`` from its logit. The first time the row leaves every copy it is
free for good: from there it is a new program whatever it writes (one changed number is a mutation), so
this never touches a sample that has already diverged.

``avoid`` (``crossmut.avoid_known``) adds programs that are not in the prompt: every program the run already
holds, as the LM would write it after the prefill. A copy of any of them is a duplicate too, and the prompt's
penalty alone moved Gemma's copies onto one nearby program (the MLP seed with 10 units instead of 100, written
17 times in 122 samples under the grammar).

Matching ignores whitespace, so a row cannot escape by spelling the same line with other spaces or another
token split of the same text (the hash that decides duplicates ignores formatting too). Only the
``candidates`` most likely tokens of a row are checked each step (the rest carry almost no probability);
tokens that are only whitespace are never penalised: they do not advance a copy.
"""

from __future__ import annotations

import re
from typing import Sequence

_SPACE = re.compile(r"\s+")


def squash(text: str) -> str:
    """``text`` without whitespace: two spellings of one line compare equal."""
    return _SPACE.sub("", text)


def copy_targets(prompt: str, anchor_lines: int = 2) -> list[str]:
    """What follows each earlier occurrence of the prompt's last ``anchor_lines`` lines, squashed: the
    texts a completion would reproduce if it copied one of the prompt's programs from where the prompt
    stops."""
    lines = prompt.split("\n")
    if len(lines) < anchor_lines:
        return []
    anchor = "\n".join(lines[-anchor_lines:])
    if not anchor.strip():
        return []
    head, targets, start = prompt[: len(prompt) - len(anchor)], [], 0
    while (at := head.find(anchor, start)) >= 0:
        targets.append(squash(prompt[at + len(anchor):]))
        start = at + 1
    return targets


class CopyPenalty:
    """The penalty for one prompt's rows (see the module docstring); ``apply`` is called every step."""

    def __init__(self, prompt: str, n_rows: int, multiplier: float, base: float, after: int,
                 piece, candidates: int = 256, avoid: Sequence[str] = ()):
        self.multiplier, self.base, self.after, self.candidates = float(multiplier), float(base), int(after), candidates
        self.piece = piece                       # token id -> its text, squashed (cached by the caller)
        targets = list(dict.fromkeys([*copy_targets(prompt), *(t for t in map(squash, avoid) if t)]))
        self.open: list[list[str]] = [list(targets) for _ in range(n_rows)]   # copies each row may still become
        self.penalised_steps = [0] * n_rows      # steps at which a row's likely tokens were penalised

    def still_copying(self, row: int) -> bool:
        return bool(self.open[row])

    def update(self, row: int, text: str) -> None:
        """After the row wrote a token: keep only the copies its text (``text``: all it has written) is on."""
        if self.open[row]:
            written = squash(text)
            self.open[row] = [t for t in self.open[row] if t.startswith(written)]

    def apply(self, scores, alive: Sequence[int], texts: Sequence[str], lengths: Sequence[int], keep=None) -> None:
        """Lower, in place, the logits (``scores``: alive rows x kept columns) of the tokens that would keep
        each still-copying row on a copy; ``keep`` maps columns to token ids (head_vocab=code)."""
        import torch  # here, not at import: evo.lm.hf imports this module and keeps its own torch imports lazy
        for pos, row in enumerate(alive):
            if not self.open[row] or lengths[row] < self.after:
                continue
            penalty = self.multiplier * self.base ** min(lengths[row] - self.after, 60)
            written = squash(texts[row])
            k = min(self.candidates, scores.shape[1])
            columns = torch.topk(scores[pos], k).indices.tolist()
            pieces = [self.piece(int(keep[col]) if keep is not None else col) for col in columns]
            # The pieces that stay on a copy: prefixes of what each open copy has next, up to the longest
            # candidate (copies x a piece's length of work, not candidates x copies).
            longest = max(map(len, pieces), default=0)
            ahead = {t[len(written):len(written) + longest] for t in self.open[row] if t.startswith(written)}
            on_copy = {a[:i] for a in ahead for i in range(1, len(a) + 1)}
            hit = [col for col, piece in zip(columns, pieces) if piece in on_copy]
            if hit:
                scores[pos, torch.tensor(hit, device=scores.device)] -= penalty
                self.penalised_steps[row] += 1

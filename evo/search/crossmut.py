"""CROSSMUT (Algorithm 2): the LM as crossover and mutation operator.

For each of the m prompts of a round: draw k parents i.i.d. from the population P, write the
few-shot prompt (``evo.search.prompt``), sample n children from the LM, and turn each sample into a
program (``evo.search.repair``). Copies of a known program may be resampled (``resample_copies``).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import List, Sequence

from evo.errors import fail
from evo.lm.base import Completion
from evo.search.filter_eval import fitness
from evo.search.program import code_hash
from evo.search.prompt import Example, make_fewshot_prompt, normalise_entry, target_metrics
from evo.search.repair import ClassRules, ClassStop, finish

log = logging.getLogger(__name__)


@dataclass
class Sample:
    """One LM sample turned into a program, ready to be stored in the archive."""
    code: str
    code_hash: str
    repairs: list[str]
    completion: Completion


@dataclass
class CrossMut:
    """Algorithm 2 (CROSSMUT) and how samples become programs. These fields are also the ``crossmut``
    config node (evo.config's schema): their defaults are the config's defaults, the paper's unless
    marked [not in paper]."""
    parents_per_prompt: int = 2            # k: in-context parents per prompt
    samples_per_prompt: int = 16           # n: children sampled per prompt (m x n = 160 per round)
    temperatures: List[float] = field(default_factory=lambda: [0.2, 0.6, 0.8, 1.0])  # "mixed temperature" sampling
    temperature_draw: str = "iid"          # iid: uniform per sample (paper; per sample or per prompt is unclear
                                           #   there); cycle: each in turn
    parents_with_replacement: bool = True  # paper: the k examples are drawn i.i.d. from Uniform(P)
    parent_order: str = "drawn"            # order of parents in the prompt: drawn (paper), fittest_last, fittest_first
    size_factor: float = 0.9               # target num_params = 0.9 x smallest parent (rounded to 100)
    accuracy_factor: float = 1.02          # target val_accuracy = 1.02 x best parent (rounded to 0.1%)
    resample_copies: int = 0               # [not in paper] extra batches per prompt that replace samples copying a
                                           #   known program
    avoid_known: bool = False              # [not in paper] with lm.copy_penalty > 0: the penalty steers a sample off
                                           #   every program the run holds (seeds, earlier samples), not only the
                                           #   prompt's parents (evo/lm/copying.py)
    max_body_lines: int = 16               # [not in paper] stop rule: a forward body longer than this is a runaway;
                                           #   cut and close it
    max_repeats: int = 3                   # [not in paper] stop rule: this many identical lines in a row is a loop
    max_dropped_lines: int = 2             # [not in paper] repair: drop at most this many broken lines from a cut-off
                                           #   sample's tail
    banned_words: List[str] = field(default_factory=list)  # [not in paper] strings the LM may not write (e.g.
                                           #   PyTorch-only names in a Flax task)
    constrain: str = "none"                # [not in paper] grammar: the LM may only write the task's child language
                                           #   (task.grammar(), enforced token by token with llguidance; lm=hf/
                                           #   gemma270m, lm=openai with lm.grammar_field)

    @staticmethod
    def check_config(node, cfg) -> None:
        """The ``crossmut`` node, before any compute (evo.config.validate asks); names the key and a fix."""
        for key in ("parents_per_prompt", "samples_per_prompt"):
            if node[key] < 1:
                fail(f"crossmut.{key}", node[key], "It counts something and must be at least 1.",
                     f"pass crossmut.{key}=1 or more.")
        if node.resample_copies < 0:
            fail("crossmut.resample_copies", node.resample_copies, "It is a number of extra batches.",
                 "pass crossmut.resample_copies=0 (the paper) or more.")
        if not node.temperatures or any(t <= 0 for t in node.temperatures):
            fail("crossmut.temperatures", list(node.temperatures), "Sampling temperatures must be positive.",
                 "pass crossmut.temperatures=[0.2,0.6,0.8,1.0] (the paper's set).")
        for key, allowed in (("temperature_draw", ("iid", "cycle")), ("parent_order", ("drawn", "fittest_last", "fittest_first")),
                             ("constrain", ("none", "grammar"))):
            if node[key] not in allowed:
                fail(f"crossmut.{key}", node[key], f"Allowed values: {', '.join(allowed)}.", f"pass crossmut.{key}={allowed[0]}.")
        if node.get("avoid_known") and not (hasattr(cfg.lm, "get") and (cfg.lm.get("copy_penalty") or 0) > 0):
            fail("crossmut.avoid_known", node.avoid_known, "It widens the copy penalty, which is off (lm.copy_penalty=0) "
                 "or which this LM backend does not have.", "pass lm.copy_penalty=1 (lm=hf, gemma270m, codegen), or "
                 "crossmut.avoid_known=false.")
        # the one LM setting the grammar depends on: transformers' generate has no token mask
        if node.constrain == "grammar" and hasattr(cfg.lm, "get") and cfg.lm.get("decoder") == "generate":
            fail("crossmut.constrain", node.constrain, "lm.decoder=generate (transformers' generate) cannot enforce a grammar.",
                 "pass lm.decoder=cached (evo's decode loop), or crossmut.constrain=none.")

    def choose_parents(self, population: Sequence[Example], rng: random.Random) -> list[Example]:
        k = self.parents_per_prompt
        if self.parents_with_replacement or len(population) < k:
            drawn = [rng.choice(population) for _ in range(k)]
        else:
            drawn = rng.sample(list(population), k)
        key = lambda e: fitness(e.num_params, e.val_accuracy)
        if self.parent_order == "fittest_last":
            drawn.sort(key=key)
        elif self.parent_order == "fittest_first":
            drawn.sort(key=key, reverse=True)
        return drawn

    def draw_temperatures(self, count: int, rng: random.Random, offset: int = 0) -> list[float]:
        temps = list(self.temperatures)
        if self.temperature_draw == "cycle":
            return [temps[(offset + i) % len(temps)] for i in range(count)]
        return [rng.choice(temps) for _ in range(count)]

    def make_prompt(self, task, parents: Sequence[Example]) -> tuple[str, dict]:
        target = target_metrics(parents, self.size_factor, self.accuracy_factor)
        return make_fewshot_prompt(task.prelude, parents, target, task.prefill, task.entry), target

    def rules(self, task) -> ClassRules:
        return ClassRules(body_marker=task.body_marker, body_indent=task.body_indent, max_body_lines=self.max_body_lines,
                          max_repeats=self.max_repeats, max_dropped_lines=self.max_dropped_lines)

    def grammar_for(self, lm, task):
        """The grammar this operator sends the LM, or None (constrain=none, or it cannot be used: said
        once in the log)."""
        if self.constrain != "grammar":
            return None
        grammar = task.grammar()
        if grammar is None or not getattr(lm, "supports_grammar", False):
            if not getattr(self, "_said_unconstrained", False):
                why = (f"task {task.name} declares no grammar" if grammar is None
                       else getattr(lm, "grammar_unsupported", f"the LM backend {type(lm).__name__} cannot enforce one"))
                log.warning("crossmut.constrain=grammar, but %s: samples are unconstrained", why)
                self._said_unconstrained = True
            return None
        return grammar

    def known_completions(self, task, codes: Sequence[str]) -> list[str]:
        """What the LM would write after the prefill to copy each of ``codes``: formatted as the prompt shows
        a program, or, for one that does not parse, as it was written; codes without the prefill are left out."""
        out = []
        for code in codes:
            try:
                text = normalise_entry(code, task.entry)
            except (SyntaxError, ValueError):
                text = code[code.find(task.prefill):] if task.prefill in code else ""
            if text.startswith(task.prefill):
                out.append(text[len(task.prefill):])
        return out

    def sample(self, lm, task, prompt: str, temperatures: Sequence[float], seed: int,
               known: Sequence[str] = ()) -> list[Sample]:
        """``known``: programs the run holds; with avoid_known, the LM's copy penalty steers off them too."""
        rules = self.rules(task)
        grammar = self.grammar_for(lm, task)
        extra = {"grammar": grammar} if grammar is not None else {}
        if self.avoid_known and known and getattr(lm, "supports_copy_penalty", False):
            extra["avoid"] = self.known_completions(task, known)
        completions = lm.sample(prompt, temperatures, seed=seed, stop=ClassStop(task.prefill, rules),
                                bad_words=[*self.banned_words, *task.banned_words], **extra)
        # What shaped a sample besides the paper's operator, on its row with the repairs.
        constraints = (["constrained:grammar"] if grammar is not None else []) + list(getattr(lm, "constraints", [])) \
            + (["copy_penalty:known_programs"] if "avoid" in extra else [])
        samples = []
        for c in completions:
            code, repairs = finish(task.prelude, task.prefill, c.text, rules, task.closing_return, task.entry)
            samples.append(Sample(code=code, code_hash=code_hash(code), repairs=constraints + repairs, completion=c))
        return samples

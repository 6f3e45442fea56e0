"""From an LM sample to a child program: where to stop sampling, and the repairs of a cut-off sample.

A child is one top-level definition (MNIST-1D: ``class Model`` with its ``__call__``; CLRS: the
function ``get_triplet_msgs``); ``ClassRules.body_marker`` names the line its body follows.
Small code LMs keep writing past the end of the definition (a second class, a training loop) or stack
layers until the token cap. ``ClassStop`` ends a sequence as soon as the body is complete,
so one runaway sample does not cost the whole batch's time. ``finish`` turns the text into a
program; everything it had to change is returned as a list of repairs and stored on the child's row.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Optional

from evo.search.program import entry_node, first_line, unparse_definition


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


@dataclass(frozen=True)
class ClassRules:
    """Where a sampled body ends. ``body_indent`` is the indentation of the body that follows the
    ``body_marker`` line (``def __call__``'s body in a class; a function's own body)."""
    body_marker: str = "def __call__"
    body_indent: int = 8
    max_body_lines: int = 16      # a longer body is a runaway stack of layers: stop and close it
    max_repeats: int = 3          # this many identical lines in a row is a loop: stop
    max_dropped_lines: int = 2    # repair at most this many broken tail lines; more would keep a trivial stub

    def end(self, full: str, final: bool) -> Optional[tuple[int, str]]:
        """Scan the complete lines of ``full`` (prefill + completion). Return (number of lines to keep,
        why) at the first end point, else None. ``final``: the text will not grow any more."""
        lines = full.split("\n")
        complete = lines if final else lines[:-1]
        body_start = next((i + 1 for i, l in enumerate(complete) if l.lstrip().startswith(self.body_marker)), None)
        if body_start is None:
            return None
        run, previous = 0, None
        for i in range(1, len(complete)):
            line = complete[i]
            if not line.strip():
                continue
            if _indent(line) == 0:
                return i, "class_closed"          # a column-0 line: the definition is over
            if i >= body_start and line.strip().startswith("return") and _indent(line) == self.body_indent:
                return i + 1, "return"
            run = run + 1 if line == previous else 1
            previous = line
            if run >= self.max_repeats:
                return i - run + 2, "repetition"  # keep one copy of the repeated line
            if i >= body_start and i - body_start + 1 > self.max_body_lines:
                return i, "too_long"
        return None


class ClassStop:
    """The LM's per-sequence stop rule: the completion (after the prefill) has reached an end point."""

    def __init__(self, prefill: str, rules: ClassRules):
        self.prefill, self.rules = prefill, rules

    def __call__(self, completion: str) -> bool:
        return self.rules.end(self.prefill + completion, final=False) is not None


def finish(prelude: str, prefill: str, completion: str, rules: ClassRules, closing: Optional[str] = None,
           entry: str = "Model") -> tuple[str, list[str]]:
    """Turn a sampled completion into a full program. Returns (program, repairs).

    ``closing`` is the task's return statement for a body cut off before its return (None: leave the
    program without one; the sandbox then records the failure)."""
    full = prefill + completion
    end = rules.end(full, final=True)
    lines = full.rstrip().split("\n") if end is None else full.split("\n")[:end[0]]
    repairs: list[str] = []
    why = end[1] if end else "cut_off"
    if (why == "return" and end[0] == len(full.split("\n")) and not completion.endswith("\n")
            and not _compiles(prelude, lines)):
        # the return line itself hit the token cap (``return f(g(`` ...): it is incomplete, like any cut-off
        # line; drop it below and close the body with the task's return. (With a grammar a cut sample is a
        # valid prefix, often of a long return line, so this is where its syntax errors would come from.)
        why, end = "cut_off", None
    if why in ("repetition", "too_long"):
        repairs.append(f"cut_{why}")
    while lines and not lines[-1].strip():
        lines.pop()
    if why != "return" and why != "class_closed":
        if end is None and not completion.endswith("\n"):
            lines.pop()  # the sample hit the token cap mid-line: that last line is incomplete
            repairs.append("dropped_cutoff_line")
    has_return = any(l.strip().startswith("return") and _indent(l) == rules.body_indent for l in lines)
    if not has_return and closing is not None:
        closing = " " * rules.body_indent + closing
        # Drop trailing lines that do not compile (an unclosed bracket, a half statement) until the
        # body plus the closing return compiles: a cut-off tail is the usual reason a sample fails.
        dropped = 0
        body_start = next(i + 1 for i, l in enumerate(lines) if l.lstrip().startswith(rules.body_marker))
        while (len(lines) > body_start and dropped < rules.max_dropped_lines
               and not _compiles(prelude, lines + [closing])):
            lines.pop()
            dropped += 1
        if dropped:
            repairs.append(f"dropped_tail_lines:{dropped}")
        lines.append(closing)
        repairs.append("closed_with_return")
    program = prelude.strip() + "\n\n\n" + "\n".join(lines) + "\n"
    return _drop_repeated_keywords(program, repairs, entry)


def _drop_repeated_keywords(program: str, repairs: list[str], entry: str) -> tuple[str, list[str]]:
    """``f(a=1, a=2)`` parses but does not compile; small LMs write it often (``padding=`` twice).
    Keep the first occurrence of each keyword, as Python's own error message would suggest."""
    try:
        tree = ast.parse(program)
    except SyntaxError:
        return program, repairs
    dropped = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            seen, kept = set(), []
            for kw in node.keywords:
                if kw.arg is not None and kw.arg in seen:
                    dropped.append(kw.arg)
                    continue
                seen.add(kw.arg)
                kept.append(kw)
            node.keywords = kept
    if not dropped:
        return program, repairs
    node = entry_node(tree, entry)
    if node is None:
        return program, repairs
    head = "\n".join(program.splitlines()[:first_line(node)]) + "\n"
    return head + unparse_definition(node) + "\n", \
        repairs + [f"dropped_repeated_keyword:{k}" for k in dropped]


def _compiles(prelude: str, lines: list[str]) -> bool:
    try:
        compile(prelude + "\n" + "\n".join(lines) + "\n", "child.py", "exec")
        return True
    except (SyntaxError, ValueError):
        return False

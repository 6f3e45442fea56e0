"""MAKEFEWSHOTPROMPT of Algorithm 2: parents with their metrics, then the target metrics and a header.

The paper's format (Listing 1): each in-context example is a docstring holding its metrics,
then its code; the prompt ends with a docstring holding the *target* metrics and the start of
``class Model`` for the LM to complete::

    \"\"\"Metrics:
    {'num_params': '4800', 'val_accuracy': '0.865'}
    \"\"\"
    class Model(nn.Module):
        ...
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Optional, Sequence

from evo.search.program import entry_source, unparse_definition


@dataclass(frozen=True)
class Example:
    """One in-context parent: its program and the metrics the prompt shows for it."""
    code: str
    num_params: int
    val_accuracy: float
    child_id: Optional[int] = None   # its row in the archive


def target_metrics(parents: Sequence[Example], size_factor: float = 0.9, accuracy_factor: float = 1.02) -> dict:
    """Paper: 0.9x the smallest parent's size (to the nearest 100) and 1.02x the best parent's
    validation accuracy (to the nearest 0.1%), capped at 1."""
    size = round(size_factor * min(p.num_params for p in parents), -2)
    acc = round(min(1.0, accuracy_factor * max(p.val_accuracy for p in parents)), 3)
    return {"num_params": int(max(size, 100)), "val_accuracy": acc}


def metrics_docstring(num_params: int, val_accuracy: float) -> str:
    metrics = {"num_params": str(int(num_params)), "val_accuracy": f"{val_accuracy:.3f}"}
    return f'"""Metrics:\n{metrics!r}\n"""'


def normalise_entry(code: str, entry: str = "Model") -> str:
    """A parent's ``entry`` (``class Model``, a function) as the prompt shows it: canonical formatting
    (ast.unparse), so every example has the same 4-space style the prefill continues, and no comments
    to copy."""
    return unparse_definition(ast.parse(entry_source(code, entry)).body[0])


def make_fewshot_prompt(prelude: str, parents: Sequence[Example], target: dict, prefill: str,
                        entry: str = "Model") -> str:
    parts = [prelude.strip(), ""]
    for p in parents:
        parts += [metrics_docstring(p.num_params, p.val_accuracy), normalise_entry(p.code, entry), ""]
    parts += [metrics_docstring(target["num_params"], target["val_accuracy"])]
    # The prompt ends mid-line inside the body (prefill): ending on a newline after the class
    # header makes small models close the class at once (offline-models notes).
    return "\n".join(parts) + "\n" + prefill


def training_text(prelude: str, example: Example, entry: str = "Model") -> str:
    """A program as soft prompt tuning learns it: the prompt's prelude, the program's own metrics
    docstring, then its class (or function), formatted exactly as an in-context example (so the tuned prompt
    learns the text it will be asked to continue)."""
    return "\n".join([prelude.strip(), "", metrics_docstring(example.num_params, example.val_accuracy),
                      normalise_entry(example.code, entry), ""])

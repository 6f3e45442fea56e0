"""What the search needs from a task: the child format, the seeds, and how to evaluate a child.

A task says how a child program looks (prelude, prefill, allowed imports), where its seed
programs are, and which harness function the sandbox runs on a child. It never executes
child code itself: ``prepare`` builds trusted inputs (datasets) once, in the search process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from evo.errors import fail

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Prepared:
    """What every sandboxed evaluation of this task gets: harness kwargs and read-only paths."""
    harness_kwargs: dict
    readonly_paths: list = field(default_factory=list)
    env: dict = field(default_factory=dict)   # extra environment of the child process (e.g. XLA flags)


class Task:
    name: str
    prelude: str            # the imports every program starts with (shown once per prompt)
    prefill: str            # the start of the entry definition the LM completes (ends mid-line)
    entry: str = "Model"    # the top-level class or function every program defines
    body_marker: str = "def __call__"   # the line the sampled body follows
    body_indent: int = 8    # indentation of that body in the prompt's canonical format
    closing_return: Optional[str] = None  # return statement that closes a body cut off before its own
    allowed_imports: list
    harness: str            # "module:function" run inside the sandbox: fn(code, **harness_kwargs) -> dict
    seeds_dir: Optional[str]
    banned_words: list = []  # strings the LM may not write (names that do not exist in the child's language)

    @classmethod
    def check_config(cls, node, cfg) -> None:
        """The ``task`` node, before any data is generated (evo.config.validate asks): the training keys
        every trained task has. A task with more keys extends this; one that trains nothing replaces it."""
        for key in ("train_steps", "batch_size"):
            if node[key] < 1:
                fail(f"task.{key}", node[key], "It counts something and must be at least 1.", f"pass task.{key}=1 or more.")
        default = f"the default in conf/task/{node.get('name', '<task>')}.yaml"
        if node.eval_every < 1:
            fail("task.eval_every", node.eval_every, "Validation runs every eval_every steps.",
                 f"pass a positive task.eval_every ({default}).")
        if not 0 < node.learning_rate < 10:
            fail("task.learning_rate", node.learning_rate, "The AdamW learning rate must be positive.",
                 f"pass a positive task.learning_rate ({default}).")

    def grammar(self) -> Optional[str]:
        """The child language as a Lark grammar of what the LM writes after the prefill (llguidance's
        dialect), for crossmut.constrain=grammar; None: this task declares none (samples unconstrained)."""
        return None

    def seed_programs(self) -> dict[str, str]:
        folder = Path(self.seeds_dir) if self.seeds_dir else REPO_ROOT / "seeds" / self.name
        files = sorted(folder.glob("*.py"))
        if not files:
            raise FileNotFoundError(f"no seed programs (*.py) in {folder}: set task.seeds_dir to a folder of seeds")
        return {f.stem: f.read_text() for f in files}

    def prepare(self, cache_dir: Path) -> Prepared:
        raise NotImplementedError

"""What the search needs from a task: the child format, the seeds, and how to evaluate a child.

A task says how a child program looks (prelude, prefill, allowed imports), where its seed
programs are, and which harness function the sandbox runs on a child. It never executes
child code itself: ``prepare`` builds trusted inputs (datasets) once, in the search process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

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

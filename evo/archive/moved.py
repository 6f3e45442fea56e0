"""The modules that moved when ``evo/`` became packages (search, sandbox, archive, analysis), old -> new.

Run folders made before the move store ``_target_`` strings with the old paths (the resume fingerprint in the
archive's meta table, the config in meta and ``.hydra/config.yaml``); :func:`current_paths` rewrites them, so an
old run still resumes (evo.run compares fingerprints through it) and still groups with new runs in evo.compare.
Library imports of the old paths are not kept working: this map is also the note for users who import evo."""

from __future__ import annotations

import re
from typing import Any

MOVED = {
    "evo.loop": "evo.search.loop",
    "evo.crossmut": "evo.search.crossmut",
    "evo.prompt": "evo.search.prompt",
    "evo.repair": "evo.search.repair",
    "evo.filter_eval": "evo.search.filter_eval",
    "evo.selection": "evo.search.selection",
    "evo.tuning": "evo.search.tuning",
    "evo.surrogate": "evo.search.surrogate",
    "evo.evaluators": "evo.search.evaluators",
    "evo.devices": "evo.search.devices",
    "evo.program": "evo.search.program",
    "evo.sandbox": "evo.sandbox.runner",
    "evo.sandbox_worker": "evo.sandbox.worker",
    "evo.exported": "evo.sandbox.exported",
    "evo.archive": "evo.archive.database",
    "evo.report": "evo.analysis.report",
    "evo.compare": "evo.analysis.compare",
    "evo.dataset": "evo.analysis.dataset",
    "evo.surrogate_quality": "evo.analysis.surrogate_quality",
    "evo.final_eval": "evo.analysis.final_eval",
    "evo.heldout": "evo.analysis.heldout",
    "evo.lineage": "evo.analysis.lineage",
}

# An old dotted path: an old module, then ``.Name`` or ``:function`` (``module:function`` strings). Longest names
# first, so that evo.surrogate_quality is not read as evo.surrogate + "_quality". A path that is already new is
# left alone (evo.sandbox.runner.X, not evo.sandbox + ".runner.X"; but the old evo.sandbox.SandboxLimits moves).
_OLD = re.compile(r"^(" + "|".join(re.escape(m) for m in sorted(MOVED, key=len, reverse=True)) + r")(?=[.:])")
_NEW = re.compile(r"^(" + "|".join(re.escape(m) for m in MOVED.values()) + r"|evo\.search|evo\.analysis)(?=[.:])")


def current_path(path: str) -> str:
    """``"evo.selection.PaperTopK"`` -> ``"evo.search.selection.PaperTopK"``; anything else unchanged."""
    if _NEW.match(path):
        return path
    return _OLD.sub(lambda m: MOVED[m.group(1)], path, count=1)


def current_paths(value: Any) -> Any:
    """``value`` (a plain config: dicts, lists, scalars) with every string that is an old module path rewritten."""
    if isinstance(value, dict):
        return {k: current_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [current_paths(v) for v in value]
    return current_path(value) if isinstance(value, str) else value

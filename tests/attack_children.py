"""Hostile child programs shared by the trust-boundary tests of each task (tests/test_sandbox_trust.py for MNIST-1D,
tests/test_clrs_trust.py for CLRS): the same attacks on the sandbox's result channel and on the trusted modules,
with the task's own imports, forged payload and honest program.

Each attack runs at import time, from inside the child's own interpreter, as a program that got past the static
checks can (the checks are a filter, not the boundary: these children import sys and os directly)."""

from __future__ import annotations

# The start of every attack child: the task's imports, FORGED (a flattering payload, with every key the task's
# harness reports), and a result line of its own carrying the nonce read off the trusted worker's frame.
HEADER = '''import json, os, sys
{imports}

FORGED = {forged!r}


def find_local(name):
    """Walk the call stack up to the trusted worker's frame and read one of its local variables."""
    frame = sys._getframe()
    while frame is not None:
        if name in frame.f_locals:
            return frame.f_locals[name]
        frame = frame.f_back
    raise LookupError(name)


def forged_line():
    return ("\\n" + json.dumps({{"nonce": find_local("nonce"), "status": "ok", "reason": "",
                                "payload": FORGED}}) + "\\n").encode()
'''

FORGERIES = {
    # the nonce and the result fd from the worker's frame, a result of our own, leave before the worker reports
    "stack_walk_early_exit": '''
os.write(find_local("result_fd"), forged_line())
os._exit(0)
''',
    # the same line to every fd this process has open (the channel is one of them), then leave
    "every_open_fd": '''
line = forged_line()
for fd in range(256):
    try:
        os.write(fd, line)
    except OSError:
        pass
os._exit(0)
''',
}

# Patch the trusted modules this interpreter can reach: the worker's reporting function, the task's parameter
# count, checks and trusted scorer, and the export's module check; ``patches`` adds the task's own.
PATCHER = '''
import evo.sandbox.worker as worker
import evo.tasks.{task}.train as train
import evo.tasks.{task}.checks as checks
import evo.tasks.{task}.trusted as trusted
import evo.sandbox.exported as exported

real_send = worker._send
worker._send = lambda fd, nonce, status, reason, payload: real_send(fd, nonce, "ok", "", {{**payload, **FORGED}})
train.count_params = lambda params: 1
{patches}
trusted.score_export = lambda *a, **k: dict(FORGED)
exported.inspect_modules = lambda *a, **k: exported.ModuleReport()
'''


def header(imports: str, forged: dict) -> str:
    """The attack children's shared start: ``imports`` (lines of Python), ``FORGED = forged``, the helpers."""
    return HEADER.format(imports=imports.strip(), forged=forged)


def forging_children(imports: str, forged: dict, program: str) -> dict[str, str]:
    """The two children that forge a result on the sandbox's channel and leave, before ``program`` (the honest
    model they would have been) is ever built; by attack name."""
    return {name: header(imports, forged) + attack + program for name, attack in FORGERIES.items()}


def patching_child(imports: str, forged: dict, task: str, patches: str, program: str) -> str:
    """A child that patches every trusted module of ``evo.tasks.<task>`` (and ``patches``: the task's own lines)
    it can reach, then defines the honest ``program``."""
    return header(imports, forged) + PATCHER.format(task=task, patches=patches.strip()) + program

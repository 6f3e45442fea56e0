"""Entry functions for tests/test_devices.py, run INSIDE the sandbox by evo.sandbox.worker
(the harness signature ``fn(code, **kwargs) -> dict``; the tests directory reaches the child via
``extra_pythonpath``)."""

from __future__ import annotations

import os


def seen_devices(code, *, folder: str, names: list, env_keys: list):
    """What this child can see: the files of ``folder`` (stand-in GPU device files), the first byte of each
    of ``names`` there it can open, the nvidia* entries of /dev, and the environment variables ``env_keys``."""
    listing = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    first_bytes = {}
    for name in names:
        try:
            with open(os.path.join(folder, name), "rb") as fh:
                first_bytes[name] = list(fh.read(1))
        except OSError as exc:
            first_bytes[name] = type(exc).__name__
    dev_nvidia = sorted(n for n in os.listdir("/dev") if n.startswith("nvidia"))
    return {"listing": listing, "first_bytes": first_bytes, "dev_nvidia": dev_nvidia,
            "env": {k: os.environ.get(k) for k in env_keys}}


def export_seen(code, *, folder: str, names: list, env_keys: list, platforms=None):
    """Stand-in untrusted stage of a TWO_STAGE entry: what it could see, and the platforms it was asked to export for."""
    return {"exported": {**seen_devices(code, folder=folder, names=names, env_keys=env_keys), "platforms": platforms}}


def score_seen(code, *, folder: str, names: list, env_keys: list, exported: dict):
    """Stand-in trusted stage: what the untrusted stage saw, and what this one sees."""
    return {"untrusted": exported, "trusted": seen_devices(code, folder=folder, names=names, env_keys=env_keys)}

"""The error every component raises for a configuration that cannot work, before any compute.

A base module on purpose: components (tasks, LM backends, the surrogate, loggers) check their own settings and
import only this, not evo.config (which knows every component and would make the imports run in a circle)."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A configuration value that cannot work. The message names the key and the fix."""


def fail(key: str, value: Any, why: str, fix: str) -> None:
    """Raise the ConfigError that names ``key=value``, why it cannot work and the fix."""
    raise ConfigError(f"Invalid configuration: {key}={value!r}. {why} Fix: {fix}")

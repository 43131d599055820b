"""Secrets come from the environment, never from a file: one way to read them, one message when one is missing."""

from __future__ import annotations

import os
from collections.abc import Mapping


class MissingSecret(ValueError):
    """A secret the site file names is not in the environment; the message names where it is named, never a value."""


def secret(name: str, where: str, env: Mapping[str, str] = os.environ, allow_empty: bool = True) -> str:
    """The value of environment variable `name`; `where` says which setting names it (a YAML path, a channel)."""
    value = env.get(name)
    if value is None or (not value and not allow_empty):
        raise MissingSecret(f"{where}: environment variable {name} is not set")
    return value

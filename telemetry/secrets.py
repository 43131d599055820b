"""Secrets come from the environment, never from a file: one way to read them, one message when one is missing."""

from __future__ import annotations

import os
from collections.abc import Mapping


class MissingSecret(ValueError):
    """A secret the site file names is not in the environment; the message names where it is named, never a value."""


def nats_login(user: str | None, password_env: str | None) -> None:
    """A NATS login (the site's uplink, the hub's): nats-py sends a user and a password only together (its CONNECT),
    so either alone was read, then never sent. ValueError for one without the other."""
    if (user is None) != (password_env is None):
        raise ValueError("user and password_env go together (the cluster's login); give both or neither")


def secret(name: str, where: str, env: Mapping[str, str] = os.environ, allow_empty: bool = True) -> str:
    """The value of environment variable `name`; `where` says which setting names it (a YAML path, a channel)."""
    value = env.get(name)
    if value is None or (not value and not allow_empty):
        raise MissingSecret(f"{where}: environment variable {name} is not set")
    return value

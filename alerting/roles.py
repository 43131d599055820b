"""User roles, ordered: each role may do everything the roles below it may do."""

from __future__ import annotations

from enum import IntEnum


class Role(IntEnum):
    VIEWER = 0  # wall screens, visitors: read only
    OFFICER = 1  # 安全员 safety officer: acknowledge, comment, shelve, report hazards, submit rectification
    MANAGER = 2  # 项目经理 / 安全总监: confirm and classify hazards, assign rectification, accept (销号), baselines
    ADMIN = 3  # enterprise safety head / system administrator: listing (挂牌督办), users, suppression by design

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(f"unknown role {name!r}; roles: {', '.join(r.name.lower() for r in cls)}") from None


class Forbidden(Exception):
    """The actor's role does not allow the action; the message names the action and the role it needs."""


def require(role: Role, needed: Role, action: str) -> None:
    if role < needed:
        raise Forbidden(f"{action} needs role {needed.name.lower()} (you are {role.name.lower()})")

"""The hub's logins: users of the config file, passwords from the environment, sessions shared by all replicas."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import time
from collections import defaultdict, deque
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from hub.config import HttpSection, HubUser

_FAIL_WINDOW_S = 15 * 60


class LoginRefused(Exception):
    """The message is safe to show: it never says which of user or password was wrong."""


def _hash(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def audit(conn: AsyncConnection[Any], actor: str, action: str, target: str, detail: Any = None) -> None:
    await conn.execute(
        "INSERT INTO hub_audit (actor, action, target, detail) VALUES (%s, %s, %s, %s)",
        (actor, action, target, None if detail is None else Jsonb(detail)),
    )


class HubAuth:
    def __init__(self, users: list[HubUser], http: HttpSection) -> None:
        missing = [u.password_env for u in users if not os.environ.get(u.password_env)]
        if missing:
            raise ValueError(f"users: password environment variable(s) not set: {', '.join(missing)}")
        self.http = http
        self.users = {u.name: u for u in users}
        self._digests: dict[str, tuple[bytes, bytes]] = {}
        for u in users:
            salt = secrets.token_bytes(16)
            self._digests[u.name] = (salt, _hash(os.environ[u.password_env], salt))  # only a hash is kept
        self._decoy = (secrets.token_bytes(16), secrets.token_bytes(32))
        # failed logins per (source address, user) and per source address, in this replica: behind the region's
        # TLS proxy every login may come from one address, so a stranger's wrong passwords lock out only the name
        # he tries (and the address as a whole only at 4x the limit), never everyone
        self._fails: dict[tuple[str, str], deque[float]] = defaultdict(deque)
        self._source_fails: dict[str, deque[float]] = defaultdict(deque)

    async def login(self, conn: AsyncConnection[Any], name: str, password: str, source: str) -> tuple[str, HubUser]:
        now = time.monotonic()
        fails, by_source = self._fails[(source, name[:64])], self._source_fails[source]
        for q in (fails, by_source):
            while q and q[0] < now - _FAIL_WINDOW_S:
                q.popleft()
        if len(fails) >= self.http.max_failed_logins or len(by_source) >= 4 * self.http.max_failed_logins:
            await audit(conn, name[:64], "auth.login_throttled", f"source:{source}")
            raise LoginRefused("too many failed logins from this address; try again in 15 minutes")
        fails.append(now)
        by_source.append(now)
        salt, digest = self._digests.get(name, self._decoy)  # an unknown name costs the same scrypt
        got = await asyncio.to_thread(_hash, password, salt)
        user = self.users.get(name)
        if user is None or not hmac.compare_digest(got, digest):
            await audit(conn, name[:64], "auth.login_failed", f"source:{source}")
            raise LoginRefused("wrong user name or password")
        fails.clear()
        by_source.pop()  # this attempt was right: it does not count against the address
        token = secrets.token_urlsafe(32)
        async with conn.transaction():
            await conn.execute("DELETE FROM hub_sessions WHERE expires_at < now()")
            await conn.execute(
                "INSERT INTO hub_sessions (token_hash, user_name, expires_at)"
                " VALUES (%s, %s, now() + make_interval(secs => %s))",
                (token_hash(token), name, self.http.session_ttl_s),
            )
            await audit(conn, name, "auth.login", f"user:{name}", {"source": source})
        return token, user

    async def user_for(self, conn: AsyncConnection[Any], token: str) -> HubUser | None:
        cur = await conn.execute(
            "SELECT user_name FROM hub_sessions WHERE token_hash = %s AND expires_at > now()", (token_hash(token),)
        )
        row = await cur.fetchone()
        return None if row is None else self.users.get(row[0])  # a user removed from the config is logged out

    async def logout(self, conn: AsyncConnection[Any], token: str) -> None:
        await conn.execute("DELETE FROM hub_sessions WHERE token_hash = %s", (token_hash(token),))

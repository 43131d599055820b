"""The hub's logins: users of the config file, passwords from the environment, sessions shared by all replicas."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import time
from collections import deque
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from hub.config import HttpSection, HubUser

_FAIL_WINDOW_S = 15 * 60


_MAX_TRACKED = 10_000  # keys per table of failed logins; past it the oldest entry goes


def _recent(table: dict[Any, deque[float]], key: Any, now: float) -> deque[float]:
    """The key's failures within the window (an empty deque, not stored, when none); an emptied entry is dropped."""
    q = table.get(key)
    if q is None:
        return deque()
    while q and q[0] < now - _FAIL_WINDOW_S:
        q.popleft()
    if not q:
        del table[key]
    return q


def _bounded(table: dict[Any, Any], key: Any) -> dict[Any, Any]:
    """The table with room for `key`: past _MAX_TRACKED the oldest entries go (insertion order)."""
    while key not in table and len(table) >= _MAX_TRACKED:
        del table[next(iter(table))]
    return table


def _track(table: dict[Any, deque[float]], key: Any, now: float) -> deque[float]:
    """The key's entry, made when missing; entries whose last failure has expired go from the table's front first
    (the oldest made: amortised, so a table of names tried once and never again empties as they expire)."""
    while table:
        first = next(iter(table))
        if table[first] and table[first][-1] >= now - _FAIL_WINDOW_S:
            break
        del table[first]
    q = table.get(key)
    if q is None:
        q = _bounded(table, key)[key] = deque()
    return q


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
        # he tries (and the address as a whole only at 4x the limit), never everyone. Only tries that reach the
        # password check add to them, expired and empty entries are dropped, and each holds at most _MAX_TRACKED
        # keys: a client trying new names (or new addresses) cannot grow a replica's memory without bound
        self._fails: dict[tuple[str, str], deque[float]] = {}
        self._source_fails: dict[str, deque[float]] = {}
        # a throttled address's run of refused tries: (when it began, how many, the name first tried); audited when
        # it begins and, with its count, when its window is over
        self._throttled: dict[str, tuple[float, int, str]] = {}

    async def login(self, conn: AsyncConnection[Any], name: str, password: str, source: str) -> tuple[str, HubUser]:
        now = time.monotonic()
        await self._end_runs(conn, now)
        key = (source, name[:64])
        # the address first: a throttled address is refused before any entry is made for the name it tries
        limit = self.http.max_failed_logins
        if len(_recent(self._source_fails, source, now)) >= 4 * limit or len(_recent(self._fails, key, now)) >= limit:
            await self._throttle(conn, name[:64], source, now)
            raise LoginRefused("too many failed logins from this address; try again in 15 minutes")
        fails = _track(self._fails, key, now)
        by_source = _track(self._source_fails, source, now)
        fails.append(now)
        by_source.append(now)
        salt, digest = self._digests.get(name, self._decoy)  # an unknown name costs the same scrypt
        got = await asyncio.to_thread(_hash, password, salt)
        user = self.users.get(name)
        if user is None or not hmac.compare_digest(got, digest):
            await audit(conn, name[:64], "auth.login_failed", f"source:{source}")
            raise LoginRefused("wrong user name or password")
        self._fails.pop(key, None)
        by_source.pop()  # this attempt was right: it does not count against the address
        if not by_source and self._source_fails.get(source) is by_source:
            del self._source_fails[source]
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

    async def _throttle(self, conn: AsyncConnection[Any], name: str, source: str, now: float) -> None:
        """A refused try of a throttled address: the first of a run is audited, the rest counted (a row per try let
        a client fill hub_audit as fast as it could send). The run is noted before the audit is awaited, so tries
        arriving meanwhile join it."""
        run = self._throttled.get(source)
        if run is not None:
            self._throttled[source] = (run[0], run[1] + 1, run[2])
            return
        self._throttled[source] = (now, 1, name)
        await audit(conn, name, "auth.login_throttled", f"source:{source}", {"refused_in_run": 1})

    async def _end_runs(self, conn: AsyncConnection[Any], now: float) -> None:
        """Runs whose window is over (or beyond _MAX_TRACKED) audited with their count, under the name they tried:
        at every login attempt, whatever its address (runs are kept in the order they began)."""
        while self._throttled:
            source = next(iter(self._throttled))
            started, n, name = self._throttled[source]
            if now - started < _FAIL_WINDOW_S and len(self._throttled) < _MAX_TRACKED:
                break
            del self._throttled[source]
            if n > 1:
                await audit(conn, name, "auth.login_throttled", f"source:{source}", {"refused_in_run": n})

    async def user_for(self, conn: AsyncConnection[Any], token: str) -> HubUser | None:
        cur = await conn.execute(
            "SELECT user_name FROM hub_sessions WHERE token_hash = %s AND expires_at > now()", (token_hash(token),)
        )
        row = await cur.fetchone()
        return None if row is None else self.users.get(row[0])  # a user removed from the config is logged out

    async def logout(self, conn: AsyncConnection[Any], token: str) -> None:
        await conn.execute("DELETE FROM hub_sessions WHERE token_hash = %s", (token_hash(token),))

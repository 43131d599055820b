"""API logins: users and roles from the site config, passwords from the environment, sessions in the state DB."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import sqlite3
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass

from alerting.config import AuthConfig
from alerting.db import audit, tx
from alerting.roles import Role
from telemetry.clock import Clock

log = logging.getLogger("sitegw.auth")

_TOUCH_NS = 60 * 10**9  # last_seen_ns is written at most this often: not one fsync per request
_FAIL_WINDOW_NS = 15 * 60 * 10**9
_NEVER = 2**63 - 1  # a machine token's end: it lasts until its environment variable changes


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    display_name: str = ""


def safe_name(name: str) -> str:
    """A user name as typed at the login, fit for the audit log: printable, at most 64 characters."""
    clean = "".join(ch if ch.isprintable() else "?" for ch in name)[:64]
    return clean + ("…" if len(name) > 64 else "")


@dataclass(slots=True)
class _Untold:
    """Throttled logins from one address in the window that began at `window_ns`, not yet in the audit table."""

    window_ns: int
    count: int = 0
    first_ns: int = 0
    last_ns: int = 0
    actor: str = ""


class AuthError(Exception):
    """Login refused; the message is safe to show (it never says which of user or password was wrong)."""


class Auth:
    def __init__(self, conn: sqlite3.Connection, cfg: AuthConfig, clock: Clock) -> None:
        self.conn = conn
        self.cfg = cfg
        self.clock = clock
        self._users: dict[str, tuple[User, bytes, bytes]] = {}
        missing = [u.password_env for u in cfg.users if not os.environ.get(u.password_env)]
        if missing:
            raise ValueError(f"users: password environment variable(s) not set: {', '.join(missing)}")
        for u in cfg.users:
            salt = secrets.token_bytes(16)
            # only a hash is kept in memory; the environment is the one place the password lives
            digest = self._hash(os.environ[u.password_env], salt)
            self._users[u.name] = (User(u.name, u.role_enum, u.display_name), salt, digest)
        self._tokens: dict[str, User] = {}
        for t in cfg.tokens:
            value = os.environ.get(t.token_env, "")
            if len(value) < 32:  # a token is a password nobody types: demand a long random one
                raise ValueError(f"auth.tokens {t.name}: {t.token_env} must hold a random token of 32+ characters")
            self._tokens[_token_hash(value)] = User(t.name, t.role_enum, "API token")
        # failed logins per (source address, user) and per source address: a stranger who types wrong passwords
        # locks out only his own address, never the officer at the site office
        self._fails: dict[tuple[str, str], deque[int]] = defaultdict(deque)
        self._source_fails: dict[str, deque[int]] = defaultdict(deque)
        self.logouts = 0  # sessions ended by a logout so far
        self._held: dict[str, _Untold] = {}  # source address -> its throttled refusals not yet audited
        self._decoy = (secrets.token_bytes(16), secrets.token_bytes(32))  # salt and digest no password matches
        if not cfg.users and not cfg.tokens:
            log.warning("no users configured (auth.users): the API refuses every request that needs a login")

    @staticmethod
    def _hash(password: str, salt: bytes) -> bytes:
        return hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)

    def login(self, name: str, password: str, source: str = "-") -> tuple[str, User, int]:
        """Check a login and open a session: (token, user, expires_ns). Blocks for the scrypt (tens of ms)."""
        now, entry, salt, digest = self._begin(name, source)
        return self._finish(name, source, now, entry, self._hash(password, salt), digest)

    async def alogin(self, name: str, password: str, source: str = "-") -> tuple[str, User, int]:
        """`login` for the event loop: the scrypt runs in a worker thread, so a stream of login attempts does not
        stall readings and alarms; the database work stays on the loop's thread (the connection is shared). After
        failures from the same address the answer comes later each time (0.25 s doubling, at most 8 s)."""
        now, entry, salt, digest = self._begin(name, source)
        recent = len(self._fails[(source, name)]) - 1  # this attempt is counted already
        if recent > 0:
            await asyncio.sleep(min(0.25 * 2 ** (recent - 1), 8.0))
        got = await asyncio.to_thread(self._hash, password, salt)
        return self._finish(name, source, now, entry, got, digest)

    def _recent(self, q: deque[int], now: int) -> deque[int]:
        while q and q[0] < now - _FAIL_WINDOW_NS:
            q.popleft()
        return q

    def _begin(self, name: str, source: str) -> tuple[int, tuple[User, bytes, bytes] | None, bytes, bytes]:
        now = self.clock()
        self._tell_ended(now)
        # .get: a refused attempt must not leave an entry per name tried (a throttled client may try thousands)
        fails = self._recent(self._fails.get((source, name), deque()), now)
        by_source = self._recent(self._source_fails[source], now)
        if len(fails) >= self.cfg.max_failed_logins or len(by_source) >= 4 * self.cfg.max_failed_logins:
            self._throttled(name, source, now)
            raise AuthError("too many failed logins from this address; try again in 15 minutes")
        # counted as a failure until proven right: attempts waiting for their hash at the same time cannot all slip
        # under the limit
        fails = self._fails[(source, name)]
        fails.append(now)
        by_source.append(now)
        entry = self._users.get(name)
        # an unknown name costs the same scrypt as a known one: a faster refusal would tell which part was wrong
        salt, digest = (entry[1], entry[2]) if entry is not None else self._decoy
        return now, entry, salt, digest

    def _finish(
        self, name: str, source: str, now: int, entry: tuple[User, bytes, bytes] | None, got: bytes, digest: bytes
    ) -> tuple[str, User, int]:
        if entry is None or not hmac.compare_digest(got, digest):
            shown = safe_name(name)
            with self._audited(source):
                audit(self.conn, now, shown, "auth.login_failed", f"user:{shown}", None, {"source": source})
            raise AuthError("wrong user name or password")
        self._fails[(source, name)].clear()
        src = self._source_fails[source]
        if src:
            src.pop()  # this attempt was right: it no longer counts against the address
        token = secrets.token_urlsafe(32)
        expires = now + int(self.cfg.session_ttl_s * 1e9)
        user = entry[0]
        with self._audited(source):
            idle = now - int(self.cfg.session_idle_s * 1e9)
            self.conn.execute(
                "DELETE FROM auth_sessions WHERE expires_ns < ? OR COALESCE(last_seen_ns, created_ns) < ?", (now, idle)
            )
            self.conn.execute(
                "INSERT INTO auth_sessions(token_hash, user, role, created_ns, expires_ns, last_seen_ns)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (_token_hash(token), user.name, user.role.name.lower(), now, expires, now),
            )
            audit(self.conn, now, user.name, "auth.login", f"user:{user.name}")
        return token, user, expires

    def _throttled(self, name: str, source: str, now: int) -> None:
        """Audit a login refused by the throttle: the first from an address in each window (15 min) at once, the
        rest counted here and written as one row with their number when the window has ended (at the next login
        attempt from anywhere) or the address is audited again. Each refusal used to commit a row of its own: a
        client repeating a refused login grew the state database by a thousand rows a second."""
        held = self._held.get(source)
        if held is not None and now - held.window_ns < _FAIL_WINDOW_NS:
            held.first_ns = held.first_ns if held.count else now
            held.count, held.last_ns, held.actor = held.count + 1, now, safe_name(name)
            return
        with self._audited(source):
            audit(self.conn, now, safe_name(name), "auth.login_throttled", f"source:{source}", None, {"refused": 1})
        self._held[source] = _Untold(now)

    def _tell_ended(self, now: int) -> None:
        """Write the counts of the throttle windows that have ended, and forget those windows."""
        for source in [s for s, held in self._held.items() if now - held.window_ns >= _FAIL_WINDOW_NS]:
            if self._held[source].count:
                with self._audited(source):
                    pass
            del self._held[source]

    def tell_held(self) -> None:
        """Write every count of throttled refusals not yet audited (the gateway stopping: they would be lost)."""
        for source in [s for s, held in self._held.items() if held.count]:
            with self._audited(source):
                pass

    @contextlib.contextmanager
    def _audited(self, source: str) -> Iterator[None]:
        """A transaction for an audit of `source` that first writes its throttled refusals not yet audited (how
        many, the first's and the last's time, the name last tried); they are told once it commits."""
        held = self._held.get(source)
        untold = held if held is not None and held.count else None
        with tx(self.conn):
            if untold is not None:
                detail = {"refused": untold.count, "first_ns": untold.first_ns, "last_ns": untold.last_ns}
                audit(self.conn, untold.last_ns, untold.actor, "auth.login_throttled", f"source:{source}", None, detail)
            yield
        if untold is not None:
            untold.count = 0

    def user_for(self, token: str) -> User | None:
        """The user of a valid session or machine token, else None; a request of a session is its activity."""
        found = self._session(token)
        if found is None:
            return None
        user, key, seen, _ = found
        now = self.clock()
        if key is not None and now - seen >= _TOUCH_NS:
            try:
                with tx(self.conn):
                    self.conn.execute("UPDATE auth_sessions SET last_seen_ns = ? WHERE token_hash = ?", (now, key))
            except sqlite3.OperationalError as err:  # a full or locked database must not log everyone out
                log.warning("session activity not recorded: %s", err)
        return user

    def valid_until(self, token: str) -> int | None:
        """The clock time (ns) until which `token` stays valid unless it is logged out (`logouts` counts those),
        or None when it is not valid now. Not activity: a live stream's re-checks must not keep the session of a
        forgotten tab alive past its idle time."""
        found = self._session(token)
        return None if found is None else found[3]

    def _session(self, token: str) -> tuple[User, str | None, int, int] | None:
        """(user, the session's key or None for a machine token, last activity, valid until) of a valid token."""
        key = _token_hash(token)
        machine = self._tokens.get(key)
        if machine is not None:
            return machine, None, 0, _NEVER
        row = self.conn.execute(
            "SELECT user, created_ns, expires_ns, last_seen_ns FROM auth_sessions WHERE token_hash = ?", (key,)
        ).fetchone()
        now = self.clock()
        if row is None or row["expires_ns"] < now:
            return None
        seen = row["last_seen_ns"] if row["last_seen_ns"] is not None else row["created_ns"]
        idle_end = seen + int(self.cfg.session_idle_s * 1e9)
        if now > idle_end:
            return None  # idle too long: the next login replaces it (expired rows are swept at each login)
        entry = self._users.get(row["user"])
        if entry is None:
            return None  # a user removed from the config loses their sessions
        return entry[0], key, seen, min(row["expires_ns"], idle_end)

    def logout(self, token: str) -> None:
        with tx(self.conn):
            self.conn.execute("DELETE FROM auth_sessions WHERE token_hash = ?", (_token_hash(token),))
        self.logouts += 1  # what a live stream's check of its session watches (gateway/api/live.py)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()

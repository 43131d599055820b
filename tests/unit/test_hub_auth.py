"""The hub's login throttle (hub/auth.py) keeps bounded memory and audit: a throttled address adds no entry and one
audit row per window (with the run's count at its end), expired and empty entries go, each table has a cap."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hub import auth
from hub.auth import HubAuth, LoginRefused
from hub.config import HttpSection, HubUser

ADDR = "203.0.113.9"


class FakeConn:
    """Takes the audit rows and the session's statements (hub_audit itself is PostgreSQL's, tested elsewhere)."""

    def __init__(self) -> None:
        self.audit: list[tuple[Any, ...]] = []

    async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        if "hub_audit" in sql:
            self.audit.append(params)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield


@pytest.fixture
def hub_auth(monkeypatch: pytest.MonkeyPatch) -> HubAuth:
    monkeypatch.setenv("PW_X", "secret-pw")
    monkeypatch.setattr(auth, "_hash", lambda password, salt: (password.encode() + salt)[:32].ljust(32, b"\0"))
    return HubAuth([HubUser(name="x", password_env="PW_X", region="R")], HttpSection())


async def attempt(a: HubAuth, conn: FakeConn, name: str, password: str = "bad", source: str = ADDR) -> str:
    try:
        await a.login(conn, name, password, source)  # type: ignore[arg-type]
    except LoginRefused as err:
        return str(err)
    return "ok"


async def test_a_throttled_address_adds_no_entry_and_one_audit_row(
    hub_auth: HubAuth, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn, now = FakeConn(), [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: now[0])
    for i in range(20):  # the address's 4 x 5 wrong passwords, with names of no account
        assert await attempt(hub_auth, conn, f"warm{i}") == "wrong user name or password"
    for i in range(5000):  # then new names for ever: refused before the password check
        assert (await attempt(hub_auth, conn, f"u{i:08d}")).startswith("too many failed logins")
    assert len(hub_auth._fails) == 20 and len(hub_auth._source_fails[ADDR]) == 20
    actions = [row[1] for row in conn.audit]
    assert actions.count("auth.login_failed") == 20 and actions.count("auth.login_throttled") == 1
    # the window passes: expired entries go, the run's count is audited once, the address may try again
    now[0] += 15 * 60 + 1
    assert await attempt(hub_auth, conn, "x", "secret-pw") == "ok"
    assert conn.audit[-2][1:] == ("auth.login_throttled", f"source:{ADDR}", conn.audit[-2][3])
    assert conn.audit[-2][3].obj == {"refused_in_run": 5000}
    assert not hub_auth._fails and not hub_auth._source_fails and not hub_auth._throttled


async def test_the_tables_of_failures_are_capped(hub_auth: HubAuth, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "_MAX_TRACKED", 8)
    conn = FakeConn()
    for i in range(30):  # a wrong password from each of 30 addresses (IPv6 gives a client plenty)
        await attempt(hub_auth, conn, "x", source=f"2001:db8::{i}")
    assert len(hub_auth._fails) == 8 and len(hub_auth._source_fails) == 8
    assert "2001:db8::29" in hub_auth._source_fails and "2001:db8::0" not in hub_auth._source_fails


async def test_a_throttled_run_is_audited_under_the_name_it_tried(
    hub_auth: HubAuth, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind the region's proxy every login comes from one address: a stranger's run at "admin" was audited, with
    its count, under the next user who logged in from it."""
    conn, now = FakeConn(), [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: now[0])
    for _ in range(305):
        await attempt(hub_auth, conn, "admin", source="10.0.0.1")
    now[0] += 15 * 60 + 1
    assert await attempt(hub_auth, conn, "x", "secret-pw", source="10.0.0.1") == "ok"
    rows = [(r[0], r[3].obj) for r in conn.audit if r[1] == "auth.login_throttled"]
    assert rows == [("admin", {"refused_in_run": 1}), ("admin", {"refused_in_run": 300})]


async def test_a_run_that_ends_in_silence_keeps_its_count(hub_auth: HubAuth, monkeypatch: pytest.MonkeyPatch) -> None:
    # the count was written only at the same address's next try: an address that never came back left "1"
    conn, now = FakeConn(), [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: now[0])
    for _ in range(3005):
        await attempt(hub_auth, conn, "admin")
    now[0] += 86400
    await attempt(hub_auth, conn, "x", "secret-pw", source="198.51.100.1")  # another address, a day later
    counts = [r[3].obj["refused_in_run"] for r in conn.audit if r[1] == "auth.login_throttled"]
    assert counts == [1, 3000]


async def test_concurrent_throttled_tries_make_one_run(hub_auth: HubAuth, monkeypatch: pytest.MonkeyPatch) -> None:
    # the run was noted after its first audit was awaited: fifty tries at once wrote fifty rows
    class SlowConn(FakeConn):
        async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
            for _ in range(3):
                await asyncio.sleep(0)
            await super().execute(sql, params)

    conn, now = SlowConn(), [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: now[0])
    for _ in range(5):
        await attempt(hub_auth, conn, "admin")
    await asyncio.gather(*(attempt(hub_auth, conn, "admin") for _ in range(50)))
    assert [r[1] for r in conn.audit].count("auth.login_throttled") == 1 and hub_auth._throttled[ADDR][1] == 50

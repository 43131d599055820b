"""Logins and machine tokens of the API: roles from the config, secrets only from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerting.config import AuthConfig
from alerting.db import connect
from alerting.roles import Role
from gateway.auth import Auth, AuthError

TOKEN = "t0k-" + "x" * 40


class Clock:
    now = 1_800_000_000 * 10**9

    def __call__(self) -> int:
        return self.now


def auth(tmp_path: Path, **cfg: object) -> Auth:
    return Auth(connect(tmp_path / "state.db"), AuthConfig.model_validate(cfg), Clock())


def test_machine_token_acts_with_its_role_and_never_expires(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_PLATFORM_TOKEN", TOKEN)
    monkeypatch.setenv("T_PW_LI", "pw-li-123")
    a = auth(
        tmp_path,
        users=[{"name": "li", "role": "manager", "password_env": "T_PW_LI"}],
        tokens=[{"name": "city-platform", "role": "viewer", "token_env": "T_PLATFORM_TOKEN"}],
    )
    u = a.user_for(TOKEN)
    assert u is not None and (u.name, u.role) == ("city-platform", Role.VIEWER)
    assert a.user_for(TOKEN[:-1]) is None and a.user_for("") is None
    a.clock.now += 365 * 86400 * 10**9  # type: ignore[attr-defined]
    assert a.user_for(TOKEN) is not None
    # the token is no password: it cannot be used to log in as a user
    with pytest.raises(AuthError):
        a.login("city-platform", TOKEN)
    # nothing secret in the database
    dump = "\n".join(a.conn.iterdump())
    assert TOKEN not in dump and "pw-li-123" not in dump


def test_session_expires_and_logout_ends_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_PW_LI", "pw-li-123")
    a = auth(tmp_path, users=[{"name": "li", "role": "manager", "password_env": "T_PW_LI"}], session_ttl_s=60)
    token, user, expires = a.login("li", "pw-li-123")
    assert user.role is Role.MANAGER and a.user_for(token) == user
    a.clock.now = expires + 1  # type: ignore[attr-defined]
    assert a.user_for(token) is None
    a.clock.now = expires - 30 * 10**9  # type: ignore[attr-defined]
    token2, _, _ = a.login("li", "pw-li-123")
    a.logout(token2)
    assert a.user_for(token2) is None


def test_a_session_ends_when_idle_and_at_its_absolute_expiry_however_active(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T_PW_LI", "pw-li-123")
    a = auth(
        tmp_path,
        users=[{"name": "li", "role": "manager", "password_env": "T_PW_LI"}],
        session_ttl_s=3600,
        session_idle_s=600,
    )
    clock: Clock = a.clock  # type: ignore[assignment]
    start = clock.now = 1_800_000_000 * 10**9
    token, _, expires = a.login("li", "pw-li-123")
    assert expires == start + 3600 * 10**9
    # used every 5 minutes: never idle, but the session still ends an hour after the login
    for minute in range(5, 60, 5):
        clock.now = start + minute * 60 * 10**9
        assert a.user_for(token) is not None, minute
    clock.now = start + 3600 * 10**9 + 1
    assert a.user_for(token) is None
    # idle: ten minutes without a request end it, even though its absolute expiry is far off
    token2, _, _ = a.login("li", "pw-li-123")
    clock.now += 9 * 60 * 10**9
    assert a.user_for(token2) is not None  # 9 min idle: still good, and this request resets the idle clock
    clock.now += 9 * 60 * 10**9
    assert a.user_for(token2) is not None
    clock.now += 10 * 60 * 10**9 + 1
    assert a.user_for(token2) is None
    # expired sessions are swept at the next login
    a.login("li", "pw-li-123")
    assert a.conn.execute("SELECT COUNT(*) FROM auth_sessions").fetchone()[0] == 1


def test_bad_token_config_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_SHORT", "abc")
    with pytest.raises(ValueError, match="T_SHORT must hold a random token of 32"):
        auth(tmp_path, tokens=[{"name": "x", "role": "viewer", "token_env": "T_SHORT"}])
    monkeypatch.delenv("T_UNSET", raising=False)
    with pytest.raises(ValueError, match="T_UNSET"):
        auth(tmp_path, tokens=[{"name": "x", "role": "viewer", "token_env": "T_UNSET"}])
    with pytest.raises(ValueError, match="used twice"):
        AuthConfig.model_validate(
            {
                "users": [{"name": "x", "role": "viewer", "password_env": "A"}],
                "tokens": [{"name": "x", "role": "viewer", "token_env": "B"}],
            }
        )
    with pytest.raises(ValueError):
        AuthConfig.model_validate({"tokens": [{"name": "x", "role": "viewer", "token": TOKEN}]})  # no inline secret


def test_throttled_logins_are_audited_once_a_window_with_their_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T_PW_LI", "pw-li-123")
    monkeypatch.setenv("T_PW_WANG", "pw-wang-123")
    users = [
        {"name": "li", "role": "manager", "password_env": "T_PW_LI"},
        {"name": "wang", "role": "admin", "password_env": "T_PW_WANG"},
    ]
    a = auth(tmp_path, users=users, max_failed_logins=2)

    def throttled(source: str) -> list[tuple[str, str, str | None]]:
        rows = a.conn.execute(
            "SELECT actor, target, detail FROM audit WHERE action = 'auth.login_throttled' AND target = ? ORDER BY id",
            (f"source:{source}",),
        )
        return [tuple(r) for r in rows]

    # eight failures (any names) throttle an address; then each of 500 attempts is refused at once
    for i in range(8):
        with pytest.raises(AuthError, match="wrong user name"):
            a.login(f"x{i}", "wrong", "10.0.0.9")
    names = len(a._fails)
    start = a.clock.now  # type: ignore[attr-defined]
    for i in range(500):
        a.clock.now += 10**9  # type: ignore[attr-defined]
        with pytest.raises(AuthError, match="too many failed logins"):
            a.login(f"y{i}", "wrong", "10.0.0.9")
    # the first is audited at once, the rest counted: no row each, and no memory for each name tried
    assert throttled("10.0.0.9") == [("y0", "source:10.0.0.9", '{"refused": 1}')]
    assert len(a._fails) == names
    # the window ends 15 min after its first refusal: the next login attempt (from anywhere) writes the rest's count
    a.clock.now = start + 10**9 + 15 * 60 * 10**9  # type: ignore[attr-defined]
    a.login("wang", "pw-wang-123", "10.0.0.1")
    rest = f'{{"refused": 499, "first_ns": {start + 2 * 10**9}, "last_ns": {start + 500 * 10**9}}}'
    assert throttled("10.0.0.9")[1:] == [("y499", "source:10.0.0.9", rest)]

    # another address: li is throttled there (two failures), wang still may log in from it; the refusals counted
    # meanwhile are written with that address's next audit, before it
    for _ in range(2):
        with pytest.raises(AuthError, match="wrong user name"):
            a.login("li", "wrong", "10.0.0.7")
    for _ in range(10):
        with pytest.raises(AuthError, match="too many failed logins"):
            a.login("li", "pw-li-123", "10.0.0.7")
    assert len(throttled("10.0.0.7")) == 1
    a.login("wang", "pw-wang-123", "10.0.0.7")
    rows = a.conn.execute("SELECT action, detail FROM audit ORDER BY id DESC LIMIT 2").fetchall()
    assert rows[1]["action"] == "auth.login_throttled" and '"refused": 9' in rows[1]["detail"]
    assert rows[0]["action"] == "auth.login"

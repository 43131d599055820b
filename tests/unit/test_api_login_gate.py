"""The login is checked before a write's body is read: an anonymous upload costs the gateway its headers only."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.api_site import api_site, call

MB = 1024 * 1024
# a survey upload in 1 MiB pieces: before the gate, an anonymous one was read whole (to 16 MiB) and parsed
UPLOAD = [b'{"filename": "s.csv", "content_b64": "' + b"A" * MB, *[b"A" * MB] * 3, b'!"}']  # not base64
LOGIN_REQUIRED = {"detail": "login required", "detail_zh": "请先登录"}


async def test_an_anonymous_write_is_refused_before_its_body_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_site(tmp_path, monkeypatch) as site:
        for headers in ([], [(b"authorization", b"Bearer forged")], [(b"cookie", b"sitegw_session=forged")]):
            for method, path in (("POST", "/api/surveys"), ("PUT", "/api/plan/image"), ("POST", "/api/logout")):
                r = await call(site.app, method, path, headers, UPLOAD)
                assert (r.status, r.json(), r.reads) == (401, LOGIN_REQUIRED, 0), (method, path, headers)
                assert r.headers["www-authenticate"] == "Bearer"
        # a method as a client spells it (uvicorn passes it on): read to the upload limit before the 405
        for method in ("post", "PROPFIND", "REPORT"):
            r = await call(site.app, method, "/api/surveys", [], UPLOAD)
            assert (r.status, r.reads) == (401, 0), method
        # a logged-out session is no session
        assert (await call(site.app, "POST", "/api/logout", site.bearer("li"), [b"{}"])).status == 200
        r = await call(site.app, "POST", "/api/surveys", site.bearer("li"), UPLOAD)
        assert (r.status, r.reads) == (401, 0)


async def test_only_who_may_upload_gets_a_large_body_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with api_site(tmp_path, monkeypatch) as site:
        r = await call(site.app, "POST", "/api/surveys", site.bearer("view"), UPLOAD)
        assert (r.status, r.reads) == (403, 0)
        assert r.json() == {"detail": "needs role officer (you are viewer)", "detail_zh": r.json()["detail_zh"]}
        r = await call(site.app, "PUT", "/api/plan/image", site.bearer("li"), UPLOAD)
        assert (r.status, r.json()["detail"], r.reads) == (403, "needs role admin (you are manager)", 0)
        # the officer's upload is read and reaches the route (not base64: refused there, 422)
        cookie = [(b"cookie", f"sitegw_session={site.tokens['zhang']}".encode())]
        r = await call(site.app, "POST", "/api/surveys", cookie, UPLOAD)
        assert r.reads >= len(UPLOAD) and r.status == 422, r.body[:200]
        # an admin's drawing goes through; other writes are the routes' own to refuse by role, after their body
        image = json.dumps({"filename": "p.png", "content_b64": base64.b64encode(b"not a picture").decode()})
        r = await call(site.app, "PUT", "/api/plan/image", site.bearer("wang"), [image.encode()])
        assert r.reads >= 1 and r.status == 422, r.body
        r = await call(site.app, "POST", "/api/alarms/1/reset", site.bearer("view"), [b'{"comment": "c"}'])
        assert (r.status, r.reads) == (403, 1)


async def test_the_login_itself_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with api_site(tmp_path, monkeypatch) as site:
        body = json.dumps({"username": "zhang", "password": "wrong-password"}).encode()
        r = await call(site.app, "POST", "/api/login", [], [body])
        assert (r.status, r.json()["detail"], r.reads) == (401, "wrong user name or password", 1)

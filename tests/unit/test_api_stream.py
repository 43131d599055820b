"""The live stream (/api/stream) ends with its session, and live streams are limited per user and in all."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from gateway.api import live
from tests.api_site import api_site, call, stream

READING = [["P1", "settlement", 12.3, 1, "good"]]


async def test_a_stream_ends_when_its_session_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with api_site(tmp_path, monkeypatch) as site:
        hub = site.gw.history.hub
        # logged out: the frame after the logout is not delivered, the stream ends instead
        async with stream(site.app, "/api/stream", site.bearer("view")) as s:
            assert s.status == 200 and "event: hello" in (await s.next_frame() or "")
            hub.publish("reading", READING)
            assert "event: reading" in (await s.next_frame() or "")
            assert (await call(site.app, "POST", "/api/logout", site.bearer("view"), [b"{}"])).status == 200
            hub.publish("reading", READING)
            assert await s.next_frame() is None
        # idle past auth.session_idle_s (30 min) with nothing but the stream open: the stream is no activity
        async with stream(site.app, "/api/stream", site.bearer("zhang")) as s:
            assert "event: hello" in (await s.next_frame() or "")
            site.clock.advance(29 * 60)
            hub.publish("reading", READING)
            assert "event: reading" in (await s.next_frame() or "")
            site.clock.advance(2 * 60)
            hub.publish("reading", READING)
            assert await s.next_frame() is None
        assert hub.subscribers == set()


async def test_a_quiet_stream_ends_at_a_heartbeat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "HEARTBEAT_S", 0.001)
    async with api_site(tmp_path, monkeypatch) as site:
        async with stream(site.app, "/api/stream", site.bearer("li")) as s:
            assert "event: hello" in (await s.next_frame() or "")
            assert "event: heartbeat" in (await s.next_frame() or "")
            site.clock.advance(12 * 3600 + 1)  # past the absolute end (auth.session_ttl_s), nothing published
            # the next heartbeat's check ends it (one heartbeat may have been on its way)
            frame = await s.next_frame()
            if frame is not None:
                assert "event: heartbeat" in frame
                frame = await s.next_frame()
            assert frame is None


async def test_streams_are_limited_per_user_and_in_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with api_site(tmp_path, monkeypatch, max_streams=10) as site:
        async with contextlib.AsyncExitStack() as open_streams:
            viewer = [
                await open_streams.enter_async_context(stream(site.app, "/api/stream", site.bearer("view")))
                for _ in range(8)  # live.STREAMS_PER_USER
            ]
            assert [s.status for s in viewer] == [200] * 8
            r = await call(site.app, "GET", "/api/stream", site.bearer("view"))
            assert r.status == 429
            assert r.json() == {
                "detail": "too many live streams of view: at most 8 at a time per user; close another tab",
                "detail_zh": "view 的实时数据连接过多：每个用户最多同时 8 个，请关闭其他页面",
            }
            for _ in range(2):  # another user still gets one, up to http.max_streams in all
                s = await open_streams.enter_async_context(stream(site.app, "/api/stream", site.bearer("zhang")))
                assert s.status == 200
            r = await call(site.app, "GET", "/api/stream", site.bearer("li"))
            assert r.status == 429
            assert r.json()["detail"] == (
                "too many live streams: this gateway serves at most 10 at a time (http.max_streams)"
            )
            assert site.gw.metrics.http_refused["429-streams"] == 2
            assert len(site.gw.history.hub.subscribers) == 10
        # closed streams free their places
        assert site.gw.history.hub.subscribers == set()
        async with stream(site.app, "/api/stream", site.bearer("li")) as s:
            assert s.status == 200

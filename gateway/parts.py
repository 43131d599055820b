"""The running gateway's parts as the HTTP API and self-monitoring see them: read-only, typed, without the Gateway."""

from __future__ import annotations

from typing import Protocol

from alerting.engine import AlarmEngine
from alerting.notices import Notices
from drivers.mqtt.session import MqttSession
from gateway.auth import Auth
from gateway.config import SiteConfig
from gateway.daily import DailyValues
from gateway.history import History
from gateway.influx import InfluxV1Writer, InfluxV2Writer
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline
from gateway.second_sink import SecondSink
from gateway.spool import Spool
from gateway.surveys import SurveyImporter
from gateway.tasks import TaskSupervisor
from gateway.writer import SpoolDrainer


class GatewayParts(Protocol):
    """What `gateway.app.Gateway` offers its readers; the API and /health depend on this, not on the app module
    that builds and starts them (no import cycle, and a test can hand them any object with these parts)."""

    @property
    def cfg(self) -> SiteConfig: ...
    @property
    def alarms(self) -> AlarmEngine: ...
    @property
    def auth(self) -> Auth: ...
    @property
    def history(self) -> History: ...
    @property
    def daily(self) -> DailyValues: ...
    @property
    def surveys(self) -> SurveyImporter: ...
    @property
    def notices(self) -> Notices: ...
    @property
    def second(self) -> SecondSink | None: ...
    @property
    def pipeline(self) -> Pipeline: ...
    @property
    def spool(self) -> Spool: ...
    @property
    def drainer(self) -> SpoolDrainer: ...
    @property
    def writer(self) -> InfluxV1Writer | InfluxV2Writer: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def tasks(self) -> TaskSupervisor: ...
    @property
    def sessions(self) -> list[MqttSession]: ...
    def metrics_text(self) -> str: ...

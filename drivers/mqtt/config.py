"""The MQTT driver's config: a broker, its TLS and protocol version; the password comes from the environment."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from drivers.config import ID, DriverModel


class TlsVerify(StrEnum):
    FULL = "full"
    NONE = "none"  # only for a broker on the same host with a self-signed cert; logged as a warning


class Tls(DriverModel):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    verify: TlsVerify = TlsVerify.FULL

    @model_validator(mode="after")
    def _pair(self) -> Tls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (client certificate authentication)")
        return self


class MqttProtocol(StrEnum):
    V311 = "3.1.1"
    V5 = "5"


class Broker(DriverModel):
    id: str = Field(pattern=ID)
    host: str
    port: int = Field(default=1883, ge=1, le=65535)
    client_id: str | None = None  # default: sitegw-<site>-<broker>; stable so the broker keeps the session
    username: str | None = None
    password_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    tls: Tls | None = None
    protocol: MqttProtocol = MqttProtocol.V311

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol(cls, v: Any) -> Any:
        return str(v) if isinstance(v, (int, float)) else v  # `protocol: 5` unquoted in YAML

    keepalive_s: int = Field(default=30, ge=5, le=3600)
    dead_letter_topic: str = "sitegw/deadletter"

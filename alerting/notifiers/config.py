"""Channel configuration (site YAML `notify.channels`): one model per channel type, secrets only by env var name."""

from __future__ import annotations

from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

from telemetry.yamlnum import Float, Int

_ID = r"^[A-Za-z0-9_.-]+$"
EnvName = Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")]
HeaderName = Annotated[str, Field(pattern=r"^[A-Za-z0-9-]+$")]


class _Channel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=_ID)
    # whether a message on it reaches only the people on duty it names (email): with nobody on duty it reaches
    # nobody, while a siren, a board, a webhook or a group robot still reaches the site or the group
    addresses_people: ClassVar[bool] = False


class MqttChannel(_Channel):
    type: Literal["mqtt"]
    broker: str  # id of a broker in the site config; the gateway opens the channel its own connection to it
    topic: str = Field(min_length=1, pattern=r"^[^#+]+$")  # a publish topic has no wildcards
    qos: Literal[0, 1, 2] = 1
    retain: bool = False
    timeout_s: Float = Field(default=10.0, gt=0, le=120)


class WebhookChannel(_Channel):
    type: Literal["webhook"]
    url: HttpUrl  # inline: a generic receiver's URL is not a credential; its tokens go in headers_env
    headers_env: dict[HeaderName, EnvName] = Field(default_factory=dict)  # header -> env var holding its value
    timeout_s: Float = Field(default=10.0, gt=0, le=120)


class DingTalkChannel(_Channel):
    type: Literal["dingtalk"]
    url_env: EnvName  # the full webhook URL incl. access_token
    secret_env: EnvName | None = None  # 加签 secret (SEC...), when the robot has signing enabled
    timeout_s: Float = Field(default=10.0, gt=0, le=120)


class WeComChannel(_Channel):
    type: Literal["wecom"]
    url_env: EnvName  # the full webhook URL incl. key
    timeout_s: Float = Field(default=10.0, gt=0, le=120)


class FeishuChannel(_Channel):
    type: Literal["feishu"]
    url_env: EnvName  # the full webhook URL incl. the hook id
    secret_env: EnvName | None = None  # 签名校验 secret, when the bot has signing enabled
    timeout_s: Float = Field(default=10.0, gt=0, le=120)


class EmailChannel(_Channel):
    addresses_people: ClassVar[bool] = True
    type: Literal["email"]
    host: str
    port: Int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None
    password_env: EnvName | None = None
    sender: str  # e.g. "工地告警 <alarm@site.example>"
    timeout_s: Float = Field(default=20.0, gt=0, le=300)
    ca_file: Path | None = None  # a private CA for the mail server; default: the system trust store

    @model_validator(mode="after")
    def _workable(self) -> EmailChannel:
        """Settings that can never send (or would send the password in clear) are refused now, not at an alarm."""
        if self.port == 465 and self.security != "ssl":
            raise ValueError("port 465 is implicit TLS (RFC 8314 §3.3): use security: ssl, or port 587 for starttls")
        if self.port == 587 and self.security == "ssl":
            raise ValueError("port 587 is submission with STARTTLS (RFC 8314 §3.3): use security: starttls, or 465")
        if (self.username is None) != (self.password_env is None):
            raise ValueError("username and password_env go together: give both to log in, or neither")
        if self.username is not None and self.security == "none":
            raise ValueError("a login over security: none sends the password in clear (RFC 4954 §4): use starttls/ssl")
        if "@" not in parseaddr(self.sender)[1]:
            raise ValueError(f"sender {self.sender!r} has no address: write it as 工地告警 <alarm@example.cn>")
        return self


ChannelConfig = Annotated[
    MqttChannel | WebhookChannel | DingTalkChannel | WeComChannel | FeishuChannel | EmailChannel,
    Field(discriminator="type"),
]

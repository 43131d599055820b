"""The payload map of an MQTT profile: JSON fields and point arrays to quantities, the device key, its bad values."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drivers.quality import QualityName, sentinel_table
from drivers.timefmt import TimestampSpec
from telemetry.yamlnum import Int, Scale


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class PayloadField(_Base):
    """A value at a dotted path in a JSON payload (`data.settlement`, `channels.0.value`)."""

    path: str
    quantity: str
    unit: str | None = None
    scale: Scale = 1.0
    status: str | None = None  # path of this value's status code (e.g. `data.lel_st`)
    quality: str | None = None  # the quality map that reads the code
    # an integer or a '0'/'1' string (bit 0 = the right-most character) read as a bit field: `bit` picks one bit
    bits_as: Literal["number", "binary_string"] | None = None
    bit: Int | None = Field(default=None, ge=0, le=63)

    @model_validator(mode="after")
    def _check(self) -> PayloadField:
        if (self.status is None) != (self.quality is None):
            raise ValueError("'status' (the status code's path) and 'quality' (a quality map) go together")
        if self.bit is not None and self.bits_as is None:
            raise ValueError("'bit' needs 'bits_as' (number, or binary_string for '0010...' strings)")
        return self


class PointArray(_Base):
    """An array of points inside the payload, each naming itself and (optionally) its unit."""

    path: str
    name_key: str
    value_key: str
    unit_key: str | None = None
    status_key: str | None = None  # each point's own status code (`st`, `status`, `flag`)
    quality: str | None = None  # the quality map that reads it
    names: dict[str, str]  # device's point name -> catalog quantity

    @model_validator(mode="after")
    def _check(self) -> PointArray:
        if (self.status_key is None) != (self.quality is None):
            raise ValueError("'status_key' and 'quality' (a quality map) go together")
        return self


class DeviceKey(_Base):
    """Where the device's id is found: a topic level (0-based) or a payload path."""

    source: Literal["topic", "payload"]
    segment: Int | None = Field(default=None, ge=0)
    path: str | None = None

    @model_validator(mode="after")
    def _check(self) -> DeviceKey:
        if self.source == "topic" and self.segment is None:
            raise ValueError("source 'topic' needs 'segment'")
        if self.source == "payload" and not self.path:
            raise ValueError("source 'payload' needs 'path'")
        return self


class BadWhen(_Base):
    """Mark every measured value of the message BAD (or NOT_READY) when the flag at `path` is truthy (a detector
    fault bit, a warming-up flag); state quantities (the flags themselves) stay GOOD."""

    path: str


class PayloadMap(_Base):
    # json: a JSON document; hj212: an HJ 212-2017 frame (`##0123QN=...;CP=&&DataTime=...;a34002-Rtd=41,...&&CRC`),
    # read as {"QN": .., "MN": .., "CP": {"DataTime": .., "a34002-Rtd": "41", "a34002-Flag": "N"}}
    # columns: one text line of separated values (RTKLIB solution output, CSV-like loggers), read as {"0": .., "1": ..}
    format: Literal["json", "hj212", "columns"] = "json"
    separator: str | None = None  # columns: the separator (None: any run of whitespace)
    comment: str = "%"  # columns: lines starting with this are comments (RTKLIB's header)
    device_key: DeviceKey
    timestamp: TimestampSpec = TimestampSpec()
    fields: list[PayloadField] = []
    points: PointArray | None = None
    bad_when: BadWhen | None = None
    not_ready_when: BadWhen | None = None
    # values that mean "no value", for every field and point: {"--": not_ready, "ERR": bad, "": bad, -9999: bad}
    sentinels: dict[str, QualityName] = {}
    # numbers sent as strings ("12.5", HJ 212 does it always) are read as numbers
    numeric_strings: bool = False
    # a message from a configured device holding nothing but its key and time is its heartbeat: the device is heard
    # (its `up`), nothing is stored, no dead letter (云筑's upload.towerCraneHeartbeat: deviceId and deviceTime)
    heartbeat: bool = False

    _sentinels = field_validator("sentinels", mode="before")(lambda cls, v: sentinel_table(v))

    @model_validator(mode="after")
    def _check(self) -> PayloadMap:
        if not self.fields and self.points is None:
            raise ValueError("a payload map needs 'fields' or 'points'")
        if self.heartbeat:
            self._check_heartbeat()
        return self

    def _check_heartbeat(self) -> None:
        """A heartbeat is told by its top-level keys (its device's key and time at most, PayloadDecoder.heartbeat):
        those must be top-level names that no mapped value lives under, or a data message would pass for one."""
        if self.format != "json" or self.points is not None:
            raise ValueError("heartbeat: only with format json and fields (a message of no points is no heartbeat)")
        heads = [p for p in (self.device_key.path, *(self.timestamp.path or "").split("+")) if p]
        if any("." in p or "[" in p for p in heads):
            raise ValueError(f"heartbeat: the device key and time must be top-level keys, not {heads}")
        mapped = [f.path for f in self.fields] + [f.status for f in self.fields if f.status]
        mapped += [w.path for w in (self.bad_when, self.not_ready_when) if w is not None]
        clash = sorted({p for p in mapped if p.split(".")[0].split("[")[0] in heads})
        if clash:
            raise ValueError(f"heartbeat: {clash} lie under the device key or time; a data message would pass for one")

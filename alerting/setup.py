"""What the alarm engine is given of a site: built by the composition root from the site file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from alerting.config import AlarmsConfig, EscalationConfig
from alerting.derived import DeviceContext
from alerting.hazards import HazardConfig
from alerting.messages import SiteInfo
from alerting.overrides import RulesConfig


@dataclass(frozen=True)
class AlarmSetup:
    """What the engine is given of the site (the composition root builds it from the site file): its sections of the
    config, and per device the context its rules need and the name people know it by."""

    site_id: str
    site_name: str
    timezone: str
    devices: Mapping[str, DeviceContext]
    device_names: Mapping[str, str]  # "1号塔吊 (北区)": the device's name with its zone, for messages
    alarms: AlarmsConfig = field(default_factory=AlarmsConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    escalation: EscalationConfig = field(default_factory=EscalationConfig)
    hazards: HazardConfig = field(default_factory=HazardConfig)

    def site_info(self, units: Mapping[str, str]) -> SiteInfo:
        """What messages say of the site; `units`: per rule, the unit of the value it compares."""
        kinds = {d: c.kind for d, c in self.devices.items()}
        return SiteInfo(
            self.site_name,
            self.timezone,
            self.alarms.console_url,
            dict(self.device_names),
            kinds,
            dict(units),
            self.site_id,
        )

"""Site configuration: strict, frozen pydantic models for one site YAML; errors name the YAML path and line."""

from gateway.config.loader import ConfigError, load_config
from gateway.config.sections import (
    ClockLimits,
    Device,
    HttpConfig,
    InfluxV1Sink,
    InfluxV2Sink,
    LoadChartPoint,
    Sink,
    Site,
    SpoolConfig,
)
from gateway.config.site import SiteConfig, _profiles

__all__ = [
    "ClockLimits", "ConfigError", "Device", "HttpConfig", "InfluxV1Sink", "InfluxV2Sink", "LoadChartPoint", "Sink",
    "Site", "SiteConfig", "SpoolConfig", "_profiles", "load_config",
]  # fmt: skip

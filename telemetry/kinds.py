"""Device kinds: each is one InfluxDB measurement and one set of rules."""

from __future__ import annotations

from enum import StrEnum


class DeviceKind(StrEnum):
    """Device kinds; each is one InfluxDB measurement."""

    TOWER_CRANE = "tower_crane"
    CONSTRUCTION_ELEVATOR = "construction_elevator"  # 施工升降机
    EXCAVATION = "excavation"
    FORMWORK = "formwork"
    GAS = "gas"
    ENVIRONMENT = "environment"  # 扬尘 / 噪声 monitors on the same gateway

"""Site-config checks of Modbus lines against each other and of the unit ids their devices may take."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import ConfigError, SiteConfig, load_config

BASE = """\
site: {{id: s1, name: t}}
lines:
{lines}
devices:
{devices}
sink: {{type: influxdb_v1, url: "http://127.0.0.1:8086", database: d}}
"""
RTU_DEVICES = (
    "  - {id: D1, profile: excavation_displacement_rtu_v1, line: bus-a, unit_id: 1}\n"
    "  - {id: D2, profile: excavation_inclinometer_rtu_v1, line: bus-b, unit_id: 2}"
)


def rtu(port_a: object, port_b: object) -> str:
    """Two `modbus_rtu` lines, bus-a and bus-b, on these ports."""
    return f"  - {{id: bus-a, type: modbus_rtu, port: {port_a}}}\n  - {{id: bus-b, type: modbus_rtu, port: {port_b}}}"


def load(tmp_path: Path, lines: str, devices: str = RTU_DEVICES) -> SiteConfig:
    p = tmp_path / "site.yaml"
    p.write_text(BASE.format(lines=lines, devices=devices), encoding="utf-8")
    return load_config(p)


def refusal(tmp_path: Path, lines: str, devices: str = RTU_DEVICES) -> str:
    with pytest.raises(ConfigError) as ei:
        load(tmp_path, lines, devices)
    return str(ei.value)


@pytest.fixture
def tty() -> Iterator[str]:
    """A real terminal device (a pty's slave end), standing in for /dev/ttyUSB0."""
    master, slave = os.openpty()
    try:
        yield os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


def test_two_rtu_lines_on_one_serial_port_are_refused(tmp_path: Path) -> None:
    """Two `modbus_rtu` lines with one `port` were accepted: two owner tasks, two masters on one RS-485 bus
    (Modbus over Serial Line V1.02 §2.2), and the second never opened (pymodbus opens a port exclusively) with a
    reason that did not say why."""
    lines = (
        "  - {id: bus-a, type: modbus_rtu, port: /dev/ttyUSB0}\n"
        "  - {id: bus-b, type: modbus_rtu, port: /dev/ttyUSB0, baudrate: 19200}"
    )
    msg = refusal(tmp_path, lines)
    assert "lines[1].port (line 4): '/dev/ttyUSB0' is already the port of line bus-a (lines[0])" in msg, msg
    assert "one master per serial bus" in msg
    # relative ports (to the site file) compare as written, after their `./` and `..` are worked out
    msg = refusal(tmp_path, rtu("tty/a", "./tty/x/../a"))
    assert "lines[1].port (line 4): './tty/x/../a' is already the port of line bus-a" in msg, msg


def test_two_rtu_lines_through_links_to_one_tty_are_refused(tmp_path: Path, tty: str) -> None:
    """/dev/serial/by-id links (or a link and the tty itself) that lead to one device were taken for two ports."""
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    (by_id / "usb-FTDI_A").symlink_to(tty)
    (by_id / "usb-FTDI_B").symlink_to(tty)
    msg = refusal(tmp_path, rtu(by_id / "usb-FTDI_A", by_id / "usb-FTDI_B"))
    assert f"lines[1].port (line 4): '{by_id / 'usb-FTDI_B'}' is already the port of line bus-a (lines[0]) " in msg
    assert f"('{by_id / 'usb-FTDI_A'}' leads to the same device)" in msg, msg
    assert "is already the port of line bus-a" in refusal(tmp_path, rtu(tty, by_id / "usb-FTDI_B"))
    # two ttys are two buses
    other, slave = os.openpty()
    try:
        load(tmp_path, rtu(tty, os.ttyname(slave)))
    finally:
        os.close(other)
        os.close(slave)


def test_two_rtu_over_tcp_lines_to_one_serial_server_port_are_refused(tmp_path: Path) -> None:
    """Two `modbus_rtu_over_tcp` lines to one host:port were accepted: a serial device server's port is one RS-485
    bus, and its two connections' requests would go out on it from two masters. A `modbus_tcp` line to that
    endpoint is refused likewise (one port speaks either transparent RTU or Modbus TCP)."""
    lines = (
        "  - {id: bus-a, type: modbus_rtu_over_tcp, host: 10.0.0.5, port: 4001}\n"
        "  - {id: bus-b, type: modbus_rtu_over_tcp, host: 10.0.0.5, port: 4001}"
    )
    msg = refusal(tmp_path, lines)
    expected = "lines[1].host (line 4): 10.0.0.5:4001 is already the endpoint of line bus-a (lines[0], "
    assert expected + "modbus_rtu_over_tcp): a serial device server's port is one RS-485 bus" in msg, msg
    mixed = lines.replace("bus-b, type: modbus_rtu_over_tcp", "bus-b, type: modbus_tcp")
    assert expected in refusal(tmp_path, mixed)
    named = lines.replace("10.0.0.5", "dtu-3.site", 1).replace("10.0.0.5", "DTU-3.site")  # host names: any case
    assert "lines[1].host (line 4): DTU-3.site:4001 is already the endpoint of line bus-a" in refusal(tmp_path, named)
    # the server's other serial port is another bus
    load(tmp_path, lines.replace("port: 4001}", "port: 4002}", 1))


def test_two_modbus_tcp_lines_to_one_endpoint_share_its_unit_ids(tmp_path: Path) -> None:
    """Two `modbus_tcp` lines to one host:port are allowed (a Modbus TCP server takes several connections; a
    Modbus TCP gateway is the one master of its serial side), but they reach the same devices: one unit id on
    both was two device entries for one device, polled twice."""
    lines = (
        "  - {id: gw-1, type: modbus_tcp, host: 10.0.0.7}\n  - {id: gw-2, type: modbus_tcp, host: 10.0.0.7, port: 502}"
    )
    devices = (
        "  - {id: TC-01, profile: tower_crane_tcp_v1, line: gw-1, unit_id: 1}\n"
        "  - {id: TC-02, profile: tower_crane_tcp_v1, line: gw-2, unit_id: 2}"
    )
    load(tmp_path, lines, devices)
    msg = refusal(tmp_path, lines, devices.replace("unit_id: 2", "unit_id: 1"))
    assert "devices[1].unit_id (line 7): 1 on line gw-2 is already TC-01 (line gw-1 is the same host:port)" in msg


@pytest.mark.parametrize("unit", [0, 255])
def test_a_modbus_tcp_device_takes_unit_id_0_or_255(tmp_path: Path, unit: int) -> None:
    """Unit ids were 1-247 on every line: a Modbus TCP server addressed by its IP address is sent 255 (Messaging on
    TCP/IP Implementation Guide V1.0b §4.4.2; devices that check it answer to nothing else) or 0, and both were
    refused. A serial bus (RTU, RTU over TCP) keeps 1-247: 0 is its broadcast, 248-255 are reserved."""
    lines = "  - {id: l1, type: modbus_tcp, host: 127.0.0.1, port: 1502}"
    devices = f"  - {{id: TC-01, profile: tower_crane_tcp_v1, line: l1, unit_id: {unit}}}"
    cfg = load(tmp_path, lines, devices)
    assert cfg.devices[0].unit_id == unit
    for serial in (
        "{id: l1, type: modbus_rtu, port: /dev/ttyUSB0}",
        "{id: l1, type: modbus_rtu_over_tcp, host: d, port: 4001}",
    ):
        msg = refusal(tmp_path, f"  - {serial}", devices)
        kind = "modbus_rtu_over_tcp" if "over" in serial else "modbus_rtu"
        assert f"devices[0].unit_id (line 5): {unit} on {kind} line l1: a serial bus's units are 1-247" in msg, msg
    msg = refusal(tmp_path, lines, devices.replace(f"unit_id: {unit}", "unit_id: 256"))
    assert "devices[0].unit_id (line 5): Input should be less than or equal to 255" in msg

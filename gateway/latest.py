"""The newest reading of each point: kept by device then quantity, read as a mapping keyed by (device, quantity)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from telemetry.reading import Reading


class Latest(Mapping[tuple[str, str], Reading]):
    """What the pipeline's `mark` keeps for the console, the API and tests, read-only here. Every reading passes the
    store, so it is a dict per device keyed by quantity: two lookups of strings (whose hashes Python keeps), the
    device's once per poll, against a (device, quantity) tuple made and hashed twice per reading."""

    def __init__(self) -> None:
        self.by_device: dict[str, dict[str, Reading]] = {}

    def __getitem__(self, key: tuple[str, str]) -> Reading:
        device, quantity = key
        return self.by_device[device][quantity]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for device, points in self.by_device.items():
            for quantity in points:
                yield device, quantity

    def __len__(self) -> int:
        return sum(len(points) for points in self.by_device.values())

    def put(self, r: Reading) -> None:
        """`r` is its point's newest (the caller compared the times)."""
        points = self.by_device.get(r.device)
        if points is None:
            points = self.by_device[r.device] = {}
        points[r.quantity] = r

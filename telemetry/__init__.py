"""What every layer shares, with no I/O: the Reading, the quantity catalog, device kinds, the clock, line protocol."""

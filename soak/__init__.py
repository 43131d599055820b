"""Soak with faults: the demo site at load for N minutes under a fault script, then an exact account."""

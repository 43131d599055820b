"""Modbus TCP / RTU / RTU-over-TCP driver."""

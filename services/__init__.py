"""Local real services (Mosquitto, InfluxDB 1.x, VictoriaMetrics) for `make demo` and the tests."""

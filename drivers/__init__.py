"""Device drivers: turn Modbus frames and MQTT payloads into Readings, nothing else."""

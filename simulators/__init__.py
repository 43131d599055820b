"""Device simulators: every device of a site as a real Modbus server, RTU bus or MQTT publisher."""

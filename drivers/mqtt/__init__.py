"""MQTT JSON driver."""

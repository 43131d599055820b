"""The regional hub: site events from a NATS JetStream cluster into PostgreSQL, for the authorities above the sites."""

"""SiteGW: edge telemetry gateway for smart construction sites."""

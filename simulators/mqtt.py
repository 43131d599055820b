"""MQTT devices: each publishes its profile's JSON payload at its interval, reconnecting whenever the broker is away."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl

import aiomqtt

from drivers.mqtt.config import Broker, MqttProtocol, TlsVerify
from drivers.profile import MqttProfile
from simulators.device import DeviceSim
from simulators.faults import FaultMode, malformed_payload
from simulators.payloads import topic_for

log = logging.getLogger(__name__)
RETRY_S = 0.5


def _tls(broker: Broker) -> ssl.SSLContext | None:
    if broker.tls is None:
        return None
    ctx = ssl.create_default_context(cafile=str(broker.tls.ca_file) if broker.tls.ca_file else None)
    if broker.tls.cert_file:
        ctx.load_cert_chain(broker.tls.cert_file, broker.tls.key_file)
    if broker.tls.verify is TlsVerify.NONE:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_for(broker: Broker, identifier: str) -> aiomqtt.Client:
    # the password comes from the environment when set; the simulator also runs against anonymous brokers
    password = os.environ.get(broker.password_env) if broker.password_env else None
    return aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=identifier,
        username=broker.username,
        password=password,
        protocol=aiomqtt.ProtocolVersion.V5 if broker.protocol is MqttProtocol.V5 else aiomqtt.ProtocolVersion.V311,
        keepalive=broker.keepalive_s,
        tls_context=_tls(broker),
    )


async def publish_forever(dev: DeviceSim, broker: Broker, site_id: str) -> None:
    """Publish `dev` at QoS 1 every expected_interval_s (default 1 s); never gives up on the broker."""
    if not isinstance(dev.profile, MqttProfile):
        raise TypeError(f"{dev.id} is not an MQTT device")
    profile = dev.profile
    topic = topic_for(dev.device, profile)
    interval = dev.device.expected_interval_s or 1.0
    loop = asyncio.get_running_loop()
    sent_bad = 0
    while True:
        try:
            async with client_for(broker, f"sitegw-sim-{site_id}-{dev.id}") as client:
                log.info("%s: connected to %s:%s, publishing to %s", dev.id, broker.host, broker.port, topic)
                due = loop.time()
                while True:
                    if dev.fault is FaultMode.MALFORMED:
                        await client.publish(topic, malformed_payload(profile, dev.payload(), sent_bad), qos=1)
                        sent_bad += 1
                    elif dev.fault is not FaultMode.OFFLINE:
                        await client.publish(topic, json.dumps(dev.payload(), ensure_ascii=False).encode(), qos=1)
                    due = max(due + interval, loop.time())  # no burst of catch-up messages after a stall
                    await asyncio.sleep(due - loop.time())
        except aiomqtt.MqttError as err:
            log.debug("%s: broker %s:%s unavailable (%s); retrying", dev.id, broker.host, broker.port, err)
            await asyncio.sleep(RETRY_S)

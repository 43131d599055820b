"""MQTT PUBLISH packets sliced off a read buffer where they lie: the session reader's own decoding of messages."""

from __future__ import annotations

# a message as the session takes it: topic, payload, mid, qos, and whether it is a retained message (sent because
# the session subscribed: the broker's copy of an earlier message, not a new one; paho's to decode)
Received = tuple[str, bytes, int, int, bool]

TOPICS_KEPT = 10000  # decoded topics remembered: a broker sending ever new topics must not grow them forever


def take_publishes(
    buf: bytes, pos: int, limit: int, v5: bool, topics: dict[bytes, str], items: list[Received] | None
) -> tuple[int, int]:
    """The complete QoS 0 and 1 PUBLISH packets of `buf` from `pos` (`limit` at most), appended to `items` (None:
    taken and dropped, as on an ended connection); (how many, the position after them).

    paho's way for each (MQTT 3.1.1): `_packet_read` asks `_recv` for the first byte, the length a byte at a time
    and the rest, resetting an 8-key dict per packet and taking a lock twice; `decode_publish` unpacks with format
    strings built per packet; an MQTTMessage gets its fields set one by one; a debug log line is formatted-or-not;
    `_handle_on_message` takes two locks and matches the topic against filtered callbacks (there are none). Here a
    packet is sliced off the buffer where it lies. Stops at anything else (paho's, read from the same buffer):
    another packet type, QoS 2, a retained message, a packet not wholly in the buffer, an empty or non-UTF-8 topic,
    a length that does not add up, MQTT 5 properties (`v5`: a PUBLISH carries a properties' length; only an empty
    one is taken)."""
    end, n = len(buf), 0
    # the shortest PUBLISH is 5 bytes: header, length, a 2-byte topic length and a 1-byte topic
    while n < limit and pos + 4 < end:
        head = buf[pos]
        qos = (head >> 1) & 3
        if head & 0xF1 != 0x30 or qos > 1:  # (0x01: RETAIN, rare: paho's)
            break
        i, length, shift = pos + 1, 0, 0
        while i < end and shift <= 21:  # the remaining length: at most 4 bytes of 7 bits
            b = buf[i]
            i += 1
            length |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        else:
            break  # cut by the end of the buffer, or more than 4 bytes (paho says it is malformed)
        stop = i + length
        if stop > end:
            break  # the rest is not here yet: paho reads it on
        tlen = (buf[i] << 8 | buf[i + 1]) if i + 2 <= stop else 0
        j = i + 2 + tlen + (2 if qos else 0)
        if v5:  # the properties' length (a variable byte integer): 0, a single zero byte, is all we take
            if j >= stop or buf[j]:
                break
            j += 1
        if tlen == 0 or j > stop:
            break
        raw = buf[i + 2 : i + 2 + tlen]
        topic = topics.get(raw)
        if topic is None:
            try:
                topic = raw.decode("utf-8")
            except UnicodeDecodeError:
                break
            if len(topics) < TOPICS_KEPT:
                topics[raw] = topic
        mid = (buf[i + 2 + tlen] << 8 | buf[i + 3 + tlen]) if qos else 0
        if items is not None:
            items.append((topic, buf[j:stop], mid, qos, False))
        pos = stop
        n += 1
    return n, pos

"""Checks Agora's WebSocket port with clients this project did not write: Python's
`websockets` speaking the native protocol on /agora, and paho-mqtt speaking MQTT on
/mqtt (its WebSocket transport).

Usage: python3 ws_check.py <port>. Prints what it checked; exits 1 on the first failure,
naming it. Every wait is bounded (10 s).
"""

import asyncio
import queue
import sys

import paho.mqtt.client as mqtt
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

PORT = int(sys.argv[1])
WAIT = 10


def fail(what):
    print(f"FAILED: {what}", file=sys.stderr)
    sys.exit(1)


async def frames(ws, until):
    """Reads binary messages until `until` (bytes) has arrived; returns all of them."""
    got = b""
    while until not in got:
        msg = await asyncio.wait_for(ws.recv(), WAIT)
        if not isinstance(msg, bytes):
            fail(f"a text message: {msg!r}")
        got += msg
    return got


async def native():
    uri = f"ws://127.0.0.1:{PORT}/agora"
    async with connect(uri) as sub, connect(uri) as pub:
        info = await frames(sub, b"\r\n")
        if not info.startswith(b"INFO "):
            fail(f"no INFO first on /agora: {info!r}")
        await sub.send(b"SUB #1 topic:ws.demo 1\r\n")
        await frames(sub, b"OK #1\r\n")
        await frames(pub, b"\r\n")
        # One publish cut across two messages, and two frames in one message.
        await pub.send(b"PUB topic:ws.demo 5\r\nhel")
        await pub.send(b"lo\r\nPUB topic:ws.demo 5\r\nworld\r\n")
        got = await frames(sub, b"world\r\n")
        if b"hello" not in got:
            fail(f"/agora: {got!r}")
    print("websockets /agora: INFO, SUB, PUB across and within messages: ok")
    try:
        async with connect(f"ws://127.0.0.1:{PORT}/nowhere"):
            fail("a WebSocket at /nowhere")
    except InvalidStatus as e:
        if e.response.status_code != 404:
            fail(f"/nowhere answered {e.response.status_code}")
    print("websockets /nowhere: 404: ok")


def over_mqtt():
    got = queue.Queue()
    acks = queue.Queue()

    def client(cid):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, transport="websockets")
        c.ws_set_options(path="/mqtt")
        c.on_connect = lambda c, u, f, rc, p: acks.put(("connack", rc))
        c.on_subscribe = lambda c, u, mid, rcs, p: acks.put(("suback", rcs))
        c.on_message = lambda c, u, m: got.put(m)
        c.connect("127.0.0.1", PORT, keepalive=30)
        c.loop_start()
        kind, rc = acks.get(timeout=WAIT)
        if kind != "connack" or rc.is_failure:
            fail(f"{cid}: {kind} {rc}")
        return c

    sub = client("ws-sub")
    sub.subscribe("ws/+/x", qos=1)
    kind, rcs = acks.get(timeout=WAIT)
    if kind != "suback" or rcs[0].is_failure:
        fail(f"SUBACK {rcs}")
    pub = client("ws-pub")
    info = pub.publish("ws/a/x", b"over websocket", qos=1)
    info.wait_for_publish(WAIT)
    m = got.get(timeout=WAIT)
    if (m.topic, m.payload) != ("ws/a/x", b"over websocket"):
        fail(f"/mqtt: {m.topic} {m.payload!r}")
    for c in (sub, pub):
        c.disconnect()
        c.loop_stop()
    print("paho /mqtt: CONNECT, SUBSCRIBE, QoS 1 PUBLISH over WebSocket: ok")


asyncio.run(native())
over_mqtt()

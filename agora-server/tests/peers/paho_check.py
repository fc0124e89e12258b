"""Checks Agora's MQTT port with paho-mqtt, a client this project did not write.

Usage: python3 paho_check.py <port>. Prints what it checked; exits 1 on the first
failure, naming it. Every wait is bounded (10 s).
"""

import queue
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

PORT = int(sys.argv[1])
WAIT = 10


def fail(what):
    print(f"FAILED: {what}", file=sys.stderr)
    sys.exit(1)


class Client:
    """A paho client on its own network thread, with its events as queues."""

    def __init__(self, version, cid, persistent=False):
        v5 = version == mqtt.MQTTv5
        extra = {} if v5 else {"clean_session": not persistent}
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=version, **extra
        )
        self.connected = queue.Queue()
        self.subscribed = queue.Queue()
        self.messages = queue.Queue()
        self.c.on_connect = lambda c, u, flags, rc, props: self.connected.put((rc, flags))
        self.c.on_subscribe = lambda c, u, mid, rcs, props: self.subscribed.put(rcs)
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        if v5:
            props = Properties(PacketTypes.CONNECT)
            if persistent:
                props.SessionExpiryInterval = 300
            self.c.connect(
                "127.0.0.1", PORT, keepalive=30, clean_start=not persistent, properties=props
            )
        else:
            self.c.connect("127.0.0.1", PORT, keepalive=30)
        self.c.loop_start()
        rc, flags = self.connected.get(timeout=WAIT)
        if rc.is_failure:
            fail(f"{cid}: CONNACK {rc}")
        self.session_present = flags.session_present

    def subscribe(self, topic, qos):
        self.c.subscribe(topic, qos=qos)
        rcs = self.subscribed.get(timeout=WAIT)
        if any(rc.is_failure for rc in rcs):
            fail(f"SUBACK {rcs} for {topic}")
        return rcs

    def message(self):
        try:
            return self.messages.get(timeout=WAIT)
        except queue.Empty:
            fail("no message within 10 s")

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def check(version, name):
    v5 = version == mqtt.MQTTv5
    sub = Client(version, f"paho-sub-{name}")
    rcs = sub.subscribe(f"paho-{name}/+/x", 2)
    if rcs[0].value != 1:
        fail(f"{name}: a QoS 2 subscription was granted {rcs[0]}, not QoS 1")
    pub = Client(version, f"paho-pub-{name}")
    props = None
    if v5:
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("trace", "t-1")]
        props.ResponseTopic = "reply/here"
        props.CorrelationData = b"\x01\x02"
    info = pub.c.publish(f"paho-{name}/a b/x", b"hello", qos=1, properties=props)
    info.wait_for_publish(WAIT)
    if not info.is_published():
        fail(f"{name}: no PUBACK")
    m = sub.message()
    if (m.topic, m.payload, m.qos) != (f"paho-{name}/a b/x", b"hello", 1):
        fail(f"{name}: got {m.topic!r} {m.payload!r} at QoS {m.qos}")
    if v5:
        p = m.properties
        if getattr(p, "UserProperty", None) != [("trace", "t-1")]:
            fail(f"v5: user properties {getattr(p, 'UserProperty', None)}")
        if getattr(p, "ResponseTopic", None) != "reply/here":
            fail(f"v5: response topic {getattr(p, 'ResponseTopic', None)}")
        if getattr(p, "CorrelationData", None) != b"\x01\x02":
            fail(f"v5: correlation data {getattr(p, 'CorrelationData', None)}")
    retained = pub.c.publish(f"paho-{name}/kept/x", b"kept", qos=1, retain=True)
    retained.wait_for_publish(WAIT)
    sub.message()
    late = Client(version, f"paho-late-{name}")
    late.subscribe(f"paho-{name}/kept/#", 1)
    m = late.message()
    if (m.payload, m.retain) != (b"kept", True):
        fail(f"{name}: retained message {m.payload!r} retain={m.retain}")
    # A persistent session: subscribed, gone, published to meanwhile, back.
    away = Client(version, f"paho-away-{name}", persistent=True)
    away.subscribe(f"paho-{name}/away/#", 1)
    away.close()
    for n in (b"1", b"2"):
        info = pub.c.publish(f"paho-{name}/away/x", n, qos=1)
        info.wait_for_publish(WAIT)
    back = Client(version, f"paho-away-{name}", persistent=True)
    if not back.session_present:
        fail(f"{name}: the persistent session was not present")
    got = [back.message().payload for _ in range(2)]
    if got != [b"1", b"2"]:
        fail(f"{name}: the persistent session got {got}")
    for c in (sub, pub, late, back):
        c.close()
    print(
        f"paho {name}: publish, subscribe, QoS 1, retained, persistent session"
        f"{', properties' if v5 else ''}: ok"
    )


check(mqtt.MQTTv311, "3.1.1")
check(mqtt.MQTTv5, "5.0")

"""A stand-in for the broker's HTTP API (book/src/http-api.draft.md), to work on the
console in agora-server/src/http/console/ and run console_check.py without a broker.
For development only: the broker's own tests run the check against the broker.

Usage: python3 console_mock.py [--auth]. Binds 127.0.0.1 on a free port and prints
`listening <port>` first. Queue `jobs` fills to AGORA_EXPECT_DEPTH (default 100) at 25
messages a second, as if a client were publishing; queue `orders` and topic `prices`
move all the time. With --auth, every request needs HTTP basic auth (any password);
user `viewer` is not an admin and is refused actions with 403 not_permitted.
"""

import base64
import itertools
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

CONSOLE = Path(__file__).resolve().parents[2] / "src" / "http" / "console"
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/console.js": ("console.js", "text/javascript; charset=utf-8"),
    "/console.css": ("console.css", "text/css; charset=utf-8"),
}
# What the broker should send too: the console must work under them.
HEADERS = [("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
           ("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")]
EXPECT = int(os.environ.get("AGORA_EXPECT_DEPTH", "100"))
AUTH = "--auth" in sys.argv[1:]
START = time.monotonic()
LOCK = threading.Lock()


def destination(kind, consumers=0):
    return {"kind": kind, "messages": [], "in": 0, "out": 0, "consumers": consumers, "chain": None}


NAMES = [("queue", "jobs"), ("queue", "orders"), ("topic", "prices")]
DESTS = dict(zip(NAMES, [destination("queue"), destination("queue", 2), destination("topic", 3)]))


def put(d, payload):
    d["in"] += 1
    if d["kind"] == "queue":
        d["messages"].append(payload)
    else:
        d["out"] += d["consumers"]


def tick():
    """Once a second: `jobs` fills up once, `orders` goes up and down, `prices` flows."""
    for n in itertools.count(1):
        time.sleep(1)
        with LOCK:
            jobs, orders, prices = (DESTS.get(k, destination("gone")) for k in NAMES)
            while jobs["in"] < EXPECT and len(jobs["messages"]) < 25 * n:
                put(jobs, f'{{"job":{jobs["in"]}}}')
            for _ in range(30 + 20 * (n % 5 == 0)):
                put(orders, f"order {orders['in']}")
            while len(orders["messages"]) > 10 + 7 * (n % 4):
                orders["messages"].pop(0)
                orders["out"] += 1
            for i in range(12):
                put(prices, str(100 + i))


def stats():
    rows = []
    for (kind, name), d in sorted(DESTS.items()):
        size = sum(len(m) for m in d["messages"])
        rows.append({"kind": kind, "name": name, "depth": len(d["messages"]), "unacked": 0, "paged": 0,
                     "consumers": d["consumers"], "messages_in": d["in"], "messages_out": d["out"],
                     "bytes_in": size, "bytes_out": 0})
    used = sum(r["bytes_in"] + 128 * r["depth"] for r in rows)
    return {"server": "agora", "version": "0.1.0-mock", "uptime_s": round(time.monotonic() - START, 3),
            "clients": {"tcp": 3, "udp": 1, "mqtt": 1, "ws": 0},
            "memory": {"used": used, "limit": 1 << 30}, "storage": {"disk_bytes": 3 * 1 << 20},
            "page": {"prefix": None, "after": None, "limit": 1000, "listed": len(rows),
                     "total": len(rows), "next": None},
            "destinations": rows}


CONNECTIONS = {"connections": [
    {"id": 1, "address": "127.0.0.1:50001", "name": "worker-1", "protocol": "tcp", "user": None,
     "subscriptions": 1, "bytes_in": 1234, "bytes_out": 56789, "since_s": 12.5},
    {"id": 2, "address": "127.0.0.1:50002", "name": "<b>not bold</b>", "protocol": "mqtt",
     "user": "alice", "subscriptions": 2, "bytes_in": 99, "bytes_out": 0, "since_s": 3.0}],
    "page": {"limit": 1000, "listed": 2, "total": 2, "next": None}}


class Api(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet: the check prints what matters
        pass

    def head(self, status, ctype, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for name, value in HEADERS + list(extra):
            self.send_header(name, value)
        self.end_headers()

    def send(self, status, body, ctype="application/json", extra=()):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.head(status, ctype, [("Content-Length", str(len(data))), *extra])
        self.wfile.write(data)

    def error(self, status, code, message):
        self.send(status, {"error": {"code": code, "message": message}})

    def user(self):
        kind, _, creds = self.headers.get("Authorization", "").partition(" ")
        if kind.lower() != "basic":
            return None
        return base64.b64decode(creds).decode(errors="replace").partition(":")[0]

    def route(self, method):
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/")[1:]]
        user = self.user()
        if AUTH and user is None:
            return self.send(401, {"error": {"code": "not_permitted", "message": "who are you?"}},
                             extra=[("WWW-Authenticate", 'Basic realm="agora"')])
        if method == "GET" and url.path in FILES:
            name, ctype = FILES[url.path]
            return self.send(200, (CONSOLE / name).read_bytes(), ctype)
        if method == "GET" and url.path == "/api/events":
            return self.events()
        if method == "GET" and url.path in ("/api/stats", "/api/connections"):
            with LOCK:
                return self.send(200, stats() if url.path == "/api/stats" else CONNECTIONS)
        if parts[0] != "api" or len(parts) < 3:
            return self.error(404, "not_found", f"no route {method} {url.path}")
        if self.headers.get("X-Agora-Console") != "1":
            return self.error(403, "not_permitted", "an action needs the header X-Agora-Console: 1")
        origin = self.headers.get("Origin")
        if origin is not None and origin != f"http://{self.headers.get('Host')}":
            return self.error(403, "not_permitted", f"origin {origin} is not this broker")
        peek = method == "GET" and parts[1] == "queues"
        if user == "viewer" and not peek:
            return self.error(403, "not_permitted", "user viewer is not an admin")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode(errors="replace")
        with LOCK:
            return self.action(method, parts[1:], parse_qs(url.query), body)

    def action(self, method, parts, query, body):
        what, kind, name = (parts + [""])[:3] if parts[0] != "queues" else (parts[0], "queue", parts[1])
        d = DESTS.get((kind, name))
        if what == "publish" and kind in ("queue", "topic") and name:
            put(DESTS.setdefault((kind, name), destination(kind)), body)
            return self.send(200, {"published": True})
        if d is None:
            return self.error(404, "unknown_destination", f"there is no {kind}:{name}")
        route = (method, what, tuple(parts[2:]))
        if route == ("POST", "queues", ("purge",)):
            n = len(d["messages"])
            d["messages"].clear()
            return self.send(200, {"purged": n})
        if route == ("DELETE", "queues", ()):
            del DESTS[(kind, name)]
            return self.send(200, {"deleted": True})
        if route == ("GET", "queues", ("peek",)):
            limit = int(query.get("limit", ["10"])[0])
            return self.send(200, {"messages": [
                {"payload": m, "bytes": len(m.encode()), "headers": {"mock": "yes"}, "deliveries": 0}
                for m in d["messages"][:limit]]})
        if what == "chain" and method in ("GET", "PUT", "DELETE"):
            d["chain"] = {"GET": d["chain"], "PUT": body, "DELETE": None}[method]
            return self.send(200, {"chain": d["chain"]})
        return self.error(404, "not_found", f"no route {method} /api/{'/'.join(parts)}")

    def events(self):
        self.head(200, "text/event-stream")
        try:
            self.wfile.write(b"retry: 1000\n\n")
            while True:
                with LOCK:
                    doc = {"stats": stats(), "connections": CONNECTIONS}
                self.wfile.write(f"event: stats\ndata: {json.dumps(doc)}\n\n".encode())
                self.wfile.flush()
                time.sleep(1)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self):
        self.route(self.command)

    do_POST = do_PUT = do_DELETE = do_GET


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    server.daemon_threads = True
    threading.Thread(target=tick, daemon=True).start()
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()

"""Checks Agora's /metrics with tools this project did not write: `promtool check metrics`
lints the exposition, and a real Prometheus scrapes it and answers a query.

Usage: python3 prometheus_check.py <metrics host:port> <queue name> <expected depth>.
Needs `prometheus` and `promtool` on PATH (Debian: apt-get install prometheus). Prints what
it checked and `prometheus check: ok (...)`; on failure prints `FAILED: <what>` on stderr
and exits 1. promtool's lint findings (a missing HELP, a counter without `_total`, ...)
fail the check like parse errors do: the broker's output should be clean, not merely
parseable. Every wait is bounded; Prometheus is stopped and its directory removed on
every way out.
"""

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

WAIT = 10  # seconds: fetching, linting, Prometheus starting
SEE_DEPTH = 20  # seconds: from ready to the first scrape holding the expected value
POLL = 0.2


def fail(what):
    print(f"FAILED: {what}", file=sys.stderr)
    sys.exit(1)


def get(url):
    """The body of a GET as text; raises on transport errors and non-2xx answers."""
    with urllib.request.urlopen(url, timeout=WAIT) as r:
        return r.read().decode("utf-8"), r.headers.get("Content-Type", "")


def tool(name):
    path = shutil.which(name)
    if path is None:
        fail(f"{name} not found on PATH (apt-get install prometheus)")
    return path


def lint(target):
    url = f"http://{target}/metrics"
    try:
        body, ctype = get(url)
    except (urllib.error.URLError, OSError, UnicodeDecodeError) as e:
        fail(f"GET {url}: {e}")
    if not ctype.startswith("text/plain"):
        fail(f"GET {url}: Content-Type {ctype!r}, not text/plain; version=0.0.4")
    try:
        out = subprocess.run([tool("promtool"), "check", "metrics"], input=body.encode(),
                             capture_output=True, timeout=WAIT)
    except subprocess.TimeoutExpired:
        fail(f"promtool check metrics took over {WAIT} s")
    said = (out.stdout + out.stderr).decode(errors="replace").strip()
    # Exit 1 is a parse error, 3 is lint findings; promtool prints nothing when clean.
    if out.returncode != 0 or said:
        print(said, file=sys.stderr)
        fail(f"promtool check metrics (exit {out.returncode}) on {url}")
    families = sum(1 for line in body.splitlines() if line.startswith("# TYPE "))
    print(f"promtool check metrics: {len(body)} bytes, {families} families, no findings: ok")


def promql_string(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Prometheus:
    """A Prometheus of our own: a temporary config that scrapes only `target`, a temporary
    storage directory, and port 0 so parallel runs never collide; the port it took is read
    from its "Listening on" log line."""

    def __init__(self, target):
        self.dir = Path(tempfile.mkdtemp(prefix="agora-prometheus-"))
        self.log = self.dir / "prometheus.log"
        self.proc = None
        self.base = None
        (self.dir / "prometheus.yml").write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  scrape_timeout: 1s\n"
            "scrape_configs:\n"
            "  - job_name: agora\n"
            "    static_configs:\n"
            f"      - targets: [{json.dumps(target)}]\n"
        )

    def start(self):
        started = time.monotonic()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [tool("prometheus"),
                 f"--config.file={self.dir / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.dir / 'data'}",
                 "--web.listen-address=127.0.0.1:0"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = started + WAIT
        while self.base is None:
            self.alive_or_fail()
            said = self.log.read_text(errors="replace")
            m = re.search(r'msg="Listening on" address=(127\.0\.0\.1:\d+)', said)
            if m:
                self.base = f"http://{m.group(1)}"
            elif time.monotonic() > deadline:
                fail(f"no \"Listening on\" line from Prometheus in {WAIT} s")
            else:
                time.sleep(POLL / 4)
        while True:
            self.alive_or_fail()
            try:
                get(self.base + "/-/ready")
                break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    fail(f"Prometheus at {self.base} not ready in {WAIT} s")
                time.sleep(POLL / 4)
        ms = (time.monotonic() - started) * 1000
        print(f"prometheus: ready on {self.base[7:]} {ms:.0f} ms after start")

    def alive_or_fail(self):
        if self.proc.poll() is not None:
            fail(f"Prometheus exited with {self.proc.returncode}")

    def query(self, promql):
        """The instant vector for `promql` as [(labels, value as float)]."""
        url = self.base + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            body, _ = get(url)
            answer = json.loads(body)
        except (urllib.error.URLError, OSError, ValueError) as e:
            fail(f"query {promql}: {e}")
        if answer.get("status") != "success":
            fail(f"query {promql}: {body}")
        return [(r["metric"], float(r["value"][1])) for r in answer["data"]["result"]]

    def target_health(self):
        """Why the target may be missing: its health and last scrape error."""
        try:
            body, _ = get(self.base + "/api/v1/targets")
            ts = json.loads(body)["data"]["activeTargets"]
            return "; ".join(f"{t['scrapeUrl']} {t['health']}"
                             + (f", last error: {t['lastError']}" if t["lastError"] else "")
                             for t in ts)
        except Exception as e:  # only ever decorates a failure message
            return f"targets unknown ({e})"

    def stop(self, failed):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if failed and self.log.exists():
            # Its info lines are start-up and shut-down chatter; the rest may say why.
            said = [line for line in self.log.read_text(errors="replace").splitlines()
                    if re.search(r"level=(warn|error)", line) and "SIGTERM" not in line]
            if said:
                print("prometheus log:\n  " + "\n  ".join(said[-15:]), file=sys.stderr)
        shutil.rmtree(self.dir, ignore_errors=True)


def scrape(target, queue, expected, shown):
    prom = Prometheus(target)
    failed = True
    try:
        prom.start()
        depth = f"agora_queue_depth{{queue={promql_string(queue)}}}"
        ready = time.monotonic()
        last = None
        while True:
            got = prom.query(depth)
            if len(got) > 1:
                fail(f"{depth}: {len(got)} series: {got}")
            if got and got[0][1] == expected:
                break
            last = got[0][1] if got else None
            if time.monotonic() - ready > SEE_DEPTH:
                fail(f"{depth} is {'absent' if last is None else f'{last:g}'}, not {shown}, "
                     f"after {SEE_DEPTH} s; target: {prom.target_health()}")
            time.sleep(POLL)
        ms = (time.monotonic() - ready) * 1000
        print(f"prometheus: {depth} = {shown} {ms:.0f} ms after ready")
        up = prom.query('up{job="agora"}')
        if [v for _, v in up] != [1.0]:
            fail(f'up{{job="agora"}} is {up}, not one series at 1')
        print('prometheus: up{job="agora"} = 1: ok')
        failed = False
        return ms
    finally:
        prom.stop(failed)


def main():
    if len(sys.argv) != 4:
        fail("usage: prometheus_check.py <metrics host:port> <queue name> <expected depth>")
    target, queue = sys.argv[1], sys.argv[2]
    try:
        expected = float(sys.argv[3])
    except ValueError:
        fail(f"expected depth {sys.argv[3]!r} is not a number")
    lint(target)
    ms = scrape(target, queue, expected, sys.argv[3])
    print(f"prometheus check: ok ({ms:.0f} ms to see depth {sys.argv[3]})")


main()

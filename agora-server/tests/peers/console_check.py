"""Checks the broker's web console in a browser (Debian's Chromium driven by Playwright):
it goes live from /api/events, shows the depth of queue:jobs, purges it as an admin or is
refused as a viewer, fetches nothing from another origin and logs no error.

Usage: python3 console_check.py <base URL> <admin|viewer> [screenshot dir]
  The base URL may carry credentials (http://user:pass@127.0.0.1:PORT/); so may the
  environment, AGORA_HTTP_USER and AGORA_HTTP_PASSWORD. AGORA_EXPECT_DEPTH (default 100)
  is the depth queue:jobs must show first. In admin mode the screenshots are console.png
  and console-purged.png.
Prints what it saw; on the first failure prints `FAILED: <what>` to stderr and exits 1.
Every wait is bounded (10 s).
"""

import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

WAIT_MS = 10_000
ROW = '#destinations tr[data-kind="queue"][data-name="jobs"]'
# Chromium logs every answer of 400 or more as a console error; a viewer's refused
# purge is one on purpose.
REFUSED = "Failed to load resource: the server responded with a status of 403"


def fail(what):
    print(f"FAILED: {what}", file=sys.stderr)
    sys.exit(1)


def origin(url):
    u = urlsplit(url)
    return (u.scheme, u.hostname, u.port or {"http": 80, "https": 443}.get(u.scheme))


def main():
    if len(sys.argv) not in (3, 4) or sys.argv[2] not in ("admin", "viewer"):
        fail("usage: console_check.py <base URL> <admin|viewer> [screenshot dir]")
    base, mode = sys.argv[1], sys.argv[2]
    shots = Path(sys.argv[3]) if len(sys.argv) == 4 else None
    expect = int(os.environ.get("AGORA_EXPECT_DEPTH", "100"))
    home = origin(base)
    options = {}
    if "AGORA_HTTP_USER" in os.environ:
        options["http_credentials"] = {
            "username": os.environ["AGORA_HTTP_USER"],
            "password": os.environ.get("AGORA_HTTP_PASSWORD", ""),
            "origin": f"{home[0]}://{urlsplit(base).netloc.rpartition('@')[2]}",
        }
    if shots:
        shots.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as p:
        # /dev/shm is small in containers; Debian's launcher means to add the flag then
        # but its test of the free space can fail.
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=["--disable-dev-shm-usage"])
        try:
            check(browser.new_context(**options), base, mode, shots, expect, home)
        finally:
            browser.close()
    print(f"console check ({mode}): ok")


def check(context, base, mode, shots, expect, home):
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors, refused, elsewhere, requests = [], [], [], []
    clicked = []

    def on_console(msg):
        if msg.type not in ("error", "warning"):
            return
        if mode == "viewer" and clicked and msg.type == "error" and msg.text.startswith(REFUSED):
            refused.append(msg.text)
        else:
            errors.append(f"console {msg.type}: {msg.text}")

    def on_request(request):
        requests.append(request.url)
        if origin(request.url) != home:
            elsewhere.append(request.url)

    page.on("console", on_console)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("request", on_request)
    page.on("dialog", lambda d: d.accept())

    def wait(what, script, arg=None):
        try:
            page.wait_for_function(script, arg=arg, timeout=WAIT_MS)
        except PlaywrightError:
            fail(f"{what}, within {WAIT_MS} ms; the page shows depth {depth()!r}, "
                 f"status {page.text_content('#status')!r}, message {page.text_content('#message')!r}")

    def depth():
        cell = page.query_selector(f"{ROW} .depth")
        return cell.text_content().strip() if cell else None

    def events():
        return int(page.get_attribute("#status", "data-events") or 0)

    t0 = time.monotonic()
    try:
        answer = page.goto(base, wait_until="load", timeout=WAIT_MS)
    except PlaywrightError as e:
        fail(f"opening {base}: {e}")
    if answer is None or answer.status != 200:
        fail(f"{base} answered {answer.status if answer else 'nothing'}")
    wait("the status saying live", "() => document.getElementById('status').textContent === 'live'")
    if page.query_selector("svg#rates") is None:
        fail("no svg#rates")
    wait(f"queue:jobs showing depth {expect}",
         "([row, want]) => document.querySelector(row + ' .depth')?.textContent.trim() === want",
         [ROW, str(expect)])
    print(f"depth shown after {round((time.monotonic() - t0) * 1000)} ms")
    node = os.environ.get("AGORA_EXPECT_CLUSTER_NODE")
    if node:
        wait(f"the cluster section showing the link to node {node} up",
             "(n) => !document.getElementById('cluster-section').hidden"
             " && document.querySelector(`#cluster tr[data-node=\"${n}\"] td:nth-child(3)`)"
             "?.textContent === 'up'",
             node)
        print(f"cluster: link to node {node} shown up")
        queue = os.environ.get("AGORA_EXPECT_REPLICATED")
        if queue:
            wait(f"the replicated queue {queue} shown with its leader",
                 "(q) => { const r = document.querySelector(`#replicated tr[data-queue=\"${q}\"]`);"
                 " return !document.getElementById('replicated').hidden && r"
                 " && r.querySelector('td:nth-child(2)').textContent !== 'none'; }",
                 queue)
            leader = page.text_content(f'#replicated tr[data-queue="{queue}"] td:nth-child(2)')
            print(f"cluster: replicated queue {queue} shown led by node {leader}")
    elif not page.query_selector("#cluster-section[hidden]"):
        fail("a broker that is no cluster's node shows a cluster section")
    if shots:
        page.screenshot(path=str(shots / "console.png"), full_page=True)

    clicked.append(True)
    page.click(f"{ROW} .purge")
    if mode == "admin":
        wait("a message after Purge", "() => document.getElementById('message').textContent !== ''")
        if "purged" not in page.text_content("#message"):
            fail(f"Purge answered {page.text_content('#message')!r}")
        wait("queue:jobs showing depth 0",
             "(row) => document.querySelector(row + ' .depth')?.textContent.trim() === '0'", ROW)
        print(f"purged: {page.text_content('#message')!r}, depth shown 0")
        if shots:
            page.screenshot(path=str(shots / "console-purged.png"), full_page=True)
    else:
        wait("a message after Purge", "() => document.getElementById('message').textContent !== ''")
        if "not_permitted" not in page.text_content("#message"):
            fail(f"Purge by a viewer answered {page.text_content('#message')!r}, not not_permitted")
        # Two more documents shown, so the second one left the broker after the refusal.
        seen = events()
        wait("two more events", "(n) => +document.getElementById('status').dataset.events >= n", seen + 2)
        if depth() != str(expect):
            fail(f"the depth changed after a refused purge: {depth()!r}, not {expect}")
        print(f"refused: {page.text_content('#message')!r}, depth still {expect}")

    page.close()
    if elsewhere:
        fail(f"requests outside {base}: {elsewhere}")
    if errors:
        fail("; ".join(errors))
    print(f"{len(requests)} requests, all to the console's origin; no console error"
          + (f" but the refused purge's ({len(refused)})" if refused else ""))


if __name__ == "__main__":
    main()

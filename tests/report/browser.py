"""Headless Chromium driven over the Chrome DevTools Protocol through a pipe, with the standard
library only (no Playwright or Selenium: Playwright's browser download does not work on CI
machines without network access, and Debian's `chromium` package speaks the protocol itself).

`--remote-debugging-pipe` makes Chromium read protocol commands from file descriptor 3 and write
replies and events to descriptor 4, each message a JSON text ended by a NUL byte. A page is a
target; commands for it carry the session id returned by `Target.attachToTarget` (flat mode).

    with Chromium() as browser:
        page = browser.open("file:///tmp/report.html")
        page.errors            # console errors, uncaught exceptions, failed loads
        page.evaluate("document.title")
        page.screenshot("/tmp/shot.png")
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from typing import Any

__all__ = ["chromium_path", "Chromium", "Page", "BrowserError"]

# Flags for a root user in a container with no network: no sandbox (it needs user namespaces),
# no GPU, and none of the background services whose connections are refused here.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
)


class BrowserError(RuntimeError):
    """The browser failed, timed out or answered a command with an error."""


def chromium_path() -> str | None:
    """The Chromium executable on PATH (Debian's `chromium`), else None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """A headless Chromium process with an empty, temporary profile."""

    def __init__(self, executable: str | None = None, *, timeout: float = 60.0) -> None:
        self.executable = executable or chromium_path()
        if self.executable is None:
            raise BrowserError("chromium is not installed (apt-get install chromium)")
        self.timeout = timeout
        self._next_id = 0
        self._buffer = b""
        self._events: list[dict] = []

    def __enter__(self) -> Chromium:
        self._profile = tempfile.mkdtemp(prefix="graphnet-chromium-")
        self._log = tempfile.TemporaryFile()
        cmd_r, self._cmd_w = os.pipe()  # we write commands, Chromium reads fd 3
        self._resp_r, resp_w = os.pipe()  # Chromium writes fd 4, we read

        def child_fds() -> None:
            # Move both ends above 3 and 4 first (either may already be 3 or 4), then onto 3
            # and 4; dup2 makes them inheritable, so they survive the exec.
            high_r = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10)
            high_w = fcntl.fcntl(resp_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.proc = subprocess.Popen(
            [self.executable, *FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            # A file, not a pipe: Chromium logs freely (D-Bus warnings...) and a pipe nobody
            # reads would block it once its buffer filled.
            stderr=self._log,
            preexec_fn=child_fds,  # safe here: the test process starts it from one thread
            close_fds=False,
        )
        os.close(cmd_r)
        os.close(resp_w)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (BrowserError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._cmd_w, self._resp_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    # ------------------------------------------------------------------ protocol
    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(
                    f"timed out waiting for chromium; its log ends: {self.log_tail()}"
                )
            ready, _, _ = select.select([self._resp_r], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._resp_r, 1 << 20)
            if not chunk:
                raise BrowserError(
                    f"chromium closed the pipe (exit {self.proc.poll()}): {self.log_tail()}"
                )
            self._buffer += chunk
        msg, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(msg)

    def log_tail(self, size: int = 2000) -> str:
        """The end of what Chromium wrote to stderr."""
        self._log.seek(0, os.SEEK_END)
        end = self._log.tell()
        self._log.seek(max(0, end - size))
        return self._log.read().decode(errors="replace")

    def send(
        self,
        method: str,
        params: dict | None = None,
        *,
        session: str | None = None,
        timeout: float | None = None,
    ) -> dict:
        """Send a command and wait for its result (events that arrive meanwhile are kept)."""
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self._events.append(reply)

    def wait_event(self, method: str, *, session: str, timeout: float | None = None) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for k, ev in enumerate(self._events):
                if ev["method"] == method and ev.get("sessionId") == session:
                    return self._events.pop(k)
            msg = self._read_message(deadline)
            if "method" in msg:
                self._events.append(msg)

    def events(self, session: str) -> list[dict]:
        return [e for e in self._events if e.get("sessionId") == session]

    def open(self, url: str, *, width: int = 1280, height: int = 900) -> Page:
        """A new tab of the given size that has loaded `url`."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        nav = self.send("Page.navigate", {"url": url}, session=session)
        if nav.get("errorText"):
            raise BrowserError(f"cannot load {url}: {nav['errorText']}")
        self.wait_event("Page.loadEventFired", session=session)
        return Page(self, session, url, target)


class Page:
    """A loaded tab: evaluate expressions, collect errors, take screenshots."""

    def __init__(self, browser: Chromium, session: str, url: str, target: str) -> None:
        self.browser, self.session, self.url, self.target = browser, session, url, target

    def close(self) -> None:
        """Close the tab."""
        self.browser.send("Target.closeTarget", {"targetId": self.target})

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (awaited if it is a promise); a thrown error
        raises `BrowserError` with its text."""
        res = self.browser.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session=self.session,
        )
        if "exceptionDetails" in res:
            d = res["exceptionDetails"]
            text = d.get("exception", {}).get("description") or d.get("text")
            raise BrowserError(f"evaluating {expression[:60]!r}: {text}")
        return res.get("result", {}).get("value")

    @property
    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries (failed loads) so far."""
        self.evaluate("0")  # a round trip, so that pending events have arrived
        out = []
        for ev in self.browser.events(self.session):
            p = ev.get("params", {})
            if ev["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(" ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif ev["method"] == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append(d.get("exception", {}).get("description") or d.get("text", "?"))
            elif ev["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(p["entry"].get("text", "?") + " " + p["entry"].get("url", ""))
        return out

    def screenshot(self, path: str) -> bytes:
        """Save a PNG of the viewport to `path` and return its bytes."""
        data = base64.b64decode(
            self.browser.send("Page.captureScreenshot", {"format": "png"}, session=self.session)[
                "data"
            ]
        )
        with open(path, "wb") as fh:
            fh.write(data)
        return data

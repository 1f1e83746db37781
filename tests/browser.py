"""Headless Chromium driven over the Chrome DevTools Protocol, for tests of HTML reports.

Chromium is Debian's, unpacked by `make setup` (scripts/setup.sh) into the cache together
with the libraries this machine lacks; it runs with LD_LIBRARY_PATH over those. It listens
on loopback only, on a port it picks itself (read back from DevToolsActivePort).

    async with HeadlessChromium() as browser:
        page = await browser.open(tmp_path / "report.html")
        assert page.errors == []
        assert await page.evaluate("document.title") == "Report"
        await page.screenshot(tmp_path / "report.png")
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from llmbus.settings import default_cache_dir

# A command answers in milliseconds; a screenshot of a long page on a machine busy with
# other tests can take seconds. 30 s is generous for both and still fails a hung browser.
COMMAND_TIMEOUT_S = 30.0
# A cold start reads ~300 MB of binary and libraries; under 2 s on an idle machine.
START_TIMEOUT_S = 30.0
# Reports are local files with inline assets: loading them takes well under a second.
LOAD_TIMEOUT_S = 30.0
# A killed process group is reaped at once; this only guards against a stuck wait.
STOP_TIMEOUT_S = 10.0


class BrowserError(RuntimeError):
    """Chromium is missing, did not start, or a page or command failed."""


def find_chromium(cache: Path | None = None) -> Path:
    """The unpacked root (``chromium-<version>``) of the newest Chromium in the cache."""
    cache = cache or default_cache_dir()
    found = sorted(cache.glob("chromium-*/usr/lib/chromium/chromium"))
    if not found:
        raise BrowserError(
            f"Chromium not found: no {cache}/chromium-*/usr/lib/chromium/chromium "
            "(Debian's chromium and its libraries, unpacked there by `make setup`)"
        )
    return found[-1].parents[3]


def library_path(root: Path) -> str:
    """Every folder of the unpacked packages that holds shared libraries (libpulse's
    private one under pulseaudio/ too), for LD_LIBRARY_PATH."""
    return ":".join(sorted({str(lib.parent) for lib in (root / "usr/lib").rglob("*.so*")}))


class Page:
    """One tab. ``errors`` collects what a careful reader of the report would see go
    wrong: console errors and warnings, uncaught exceptions, failed resource loads."""

    def __init__(self, browser: HeadlessChromium, target_id: str, session_id: str) -> None:
        self._browser = browser
        self.target_id = target_id
        self.session_id = session_id
        self.errors: list[str] = []
        self._loaded: asyncio.Future[None] | None = None
        self._failed_requests: set[str] = set()  # a failed load is reported once
        self._urls: dict[str, str] = {}  # request id -> URL, which loadingFailed lacks

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        return await self._browser.send(method, params, session_id=self.session_id)

    async def goto(self, url: str) -> None:
        """Navigate and wait for the load event."""
        self._loaded = asyncio.get_running_loop().create_future()
        result = await self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise BrowserError(f"cannot open {url}: {result['errorText']}")
        try:
            await asyncio.wait_for(self._loaded, LOAD_TIMEOUT_S)
        except TimeoutError:
            raise BrowserError(f"{url}: no load event in {LOAD_TIMEOUT_S:.0f} s") from None

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (a promise is awaited), as JSON."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(
                f"evaluate({expression!r}): {_exception(result['exceptionDetails'])}"
            )
        return result["result"].get("value")

    async def screenshot(self, path: Path | str) -> Path:
        """A PNG of the whole page, beyond the viewport too."""
        size = (await self.send("Page.getLayoutMetrics"))["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = await self.send(
            "Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip
        )
        path = Path(path)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    async def close(self) -> None:
        await self._browser.send("Target.closeTarget", {"targetId": self.target_id})
        self._browser.pages.pop(self.session_id, None)

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Page.loadEventFired":
            if self._loaded and not self._loaded.done():
                self._loaded.set_result(None)
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning"):
            text = " ".join(_remote(arg) for arg in params.get("args", []))
            self.errors.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            self.errors.append(f"uncaught: {_exception(params['exceptionDetails'])}")
        elif method == "Log.entryAdded":
            entry = params["entry"]
            request = entry.get("networkRequestId")
            if entry["level"] in ("error", "warning") and request not in self._failed_requests:
                if request is not None:
                    self._failed_requests.add(request)
                self.errors.append(f"{entry['source']} {entry['level']}: {entry['text']}")
        elif method == "Network.requestWillBeSent":
            self._urls[params["requestId"]] = params["request"]["url"]
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            request = params["requestId"]
            if request not in self._failed_requests:
                self._failed_requests.add(request)
                url = self._urls.get(request, "?")
                why = params["errorText"] or params.get("blockedReason", "blocked")
                self.errors.append(f"failed load: {url}: {why}")


class HeadlessChromium:
    """The browser process and its DevTools connection; pages come from ``open``."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or find_chromium()
        self.pages: dict[str, Page] = {}  # by CDP session id
        self._proc: asyncio.subprocess.Process | None = None
        self._profile: Path | None = None
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}

    async def __aenter__(self) -> HeadlessChromium:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._profile = Path(tempfile.mkdtemp(prefix="llmbus-chromium-"))
        try:
            await self._launch(self._profile)
        except BaseException:
            await self.stop()
            raise

    async def _launch(self, profile: Path) -> None:
        log = profile / "chromium.log"  # its stderr: D-Bus complaints, kept for errors
        with log.open("wb") as stderr:
            self._proc = await asyncio.create_subprocess_exec(
                str(self.root / "usr/lib/chromium/chromium"),
                "--headless",
                "--no-sandbox",  # tests run as root, where the sandbox refuses to start
                "--disable-gpu",
                "--disable-dev-shm-usage",  # containers' /dev/shm is often 64 MB
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",  # nothing but the pages we open
                "--disable-component-update",
                "--hide-scrollbars",
                "--mute-audio",
                "about:blank",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
                env={**os.environ, "LD_LIBRARY_PATH": library_path(self.root)},
                start_new_session=True,  # its own group: stop() kills renderers too
            )
        port_file = profile / "DevToolsActivePort"  # "<port>\n/devtools/browser/<id>"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while not port_file.exists() or len(port_file.read_text().splitlines()) < 2:
            if self._proc.returncode is not None or loop.time() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                raise BrowserError(f"Chromium did not start ({self.root}):\n{tail}")
            await asyncio.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        # Screenshots come back base64 in one message: no size limit.
        self._ws = await asyncio.wait_for(
            connect(f"ws://127.0.0.1:{port}{path}", max_size=None), COMMAND_TIMEOUT_S
        )
        self._reader = asyncio.create_task(self._read())

    async def open(self, target: Path | str) -> Page:
        """A new tab on a file (path) or URL, once its load event fired."""
        url = _url(target)
        created = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send(
            "Target.attachToTarget", {"targetId": created["targetId"], "flatten": True}
        )
        page = Page(self, created["targetId"], attached["sessionId"])
        self.pages[page.session_id] = page
        for domain in ("Page", "Runtime", "Log", "Network"):
            await page.send(f"{domain}.enable")
        try:
            await page.goto(url)
        except BrowserError:
            await page.close()  # no tab left behind in the session's browser
            raise
        return page

    async def send(
        self, method: str, params: dict[str, Any] | None = None, *, session_id: str | None = None
    ) -> dict[str, Any]:
        """One CDP command; its result, or BrowserError with the protocol's message."""
        if self._ws is None:
            raise BrowserError("Chromium is not started")
        message: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}}
        if session_id:
            message["sessionId"] = session_id
        reply = asyncio.get_running_loop().create_future()
        self._pending[message["id"]] = reply
        try:
            await self._ws.send(json.dumps(message))
            return await asyncio.wait_for(reply, COMMAND_TIMEOUT_S)
        except TimeoutError:
            raise BrowserError(f"{method}: no answer in {COMMAND_TIMEOUT_S:.0f} s") from None
        finally:
            self._pending.pop(message["id"], None)

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                message = json.loads(raw)
                reply = self._pending.get(message.get("id", -1))
                if reply is not None and not reply.done():
                    if "error" in message:
                        reply.set_exception(BrowserError(f"CDP: {message['error']}"))
                    else:
                        reply.set_result(message.get("result", {}))
                elif (page := self.pages.get(message.get("sessionId", ""))) is not None:
                    page.on_event(message["method"], message.get("params", {}))
        finally:  # the browser went away: nobody waits forever
            for reply in self._pending.values():
                if not reply.done():
                    reply.set_exception(BrowserError("Chromium closed the connection"))

    async def stop(self) -> None:
        """Kill the browser (its whole process group) and remove its profile."""
        if self._ws is not None:
            await self._ws.close()
            self._ws = None
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader
            self._reader = None
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._proc.wait(), STOP_TIMEOUT_S)
            self._proc = None
        if self._profile is not None:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None
        self.pages.clear()


def _url(target: Path | str) -> str:
    """A URL as given (``data:``, ``about:``, ``scheme://``), a file path as file://."""
    if isinstance(target, str) and ("://" in target or target.startswith(("data:", "about:"))):
        return target
    return Path(target).resolve().as_uri()


def _remote(obj: dict[str, Any]) -> str:
    """A console argument (a RemoteObject) as text."""
    if "value" in obj:
        return str(obj["value"])
    return str(obj.get("description", obj.get("type", "?")))


def _exception(details: dict[str, Any]) -> str:
    exception = details.get("exception") or {}
    return str(exception.get("description") or details.get("text", "exception"))

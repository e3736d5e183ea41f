"""A small Chrome DevTools Protocol client: headless Debian chromium, driven
over one browser-level websocket with flattened sessions (one per tab)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import websockets

CHROMIUM = ("chromium", "chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # every tab is a background tab to the renderer in headless mode: keep
    # their timers and networking at full speed
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--remote-debugging-port=0",
]

Handler = Callable[[dict[str, Any]], None]


class CDPError(Exception):
    pass


def find_chromium() -> str | None:
    for name in CHROMIUM:
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._handlers: dict[str | None, list[tuple[str, Handler]]] = {}
        self._reader = asyncio.create_task(self._read(), name="cdp-reader")

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        msg: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg["id"]] = fut
        await self._ws.send(json.dumps(msg))
        return await fut

    def on(self, session: str | None, method: str, handler: Handler) -> None:
        self._handlers.setdefault(session, []).append((method, handler))

    async def new_tab(self, url: str) -> Tab:
        target = (await self.send("Target.createTarget", {"url": "about:blank"}))["targetId"]
        session = (await self.send("Target.attachToTarget", {"targetId": target, "flatten": True}))[
            "sessionId"
        ]
        tab = Tab(self, target, session)
        await tab.start()
        await tab.goto(url)
        return tab

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                msg = json.loads(raw)
                if "id" in msg:
                    fut = self._pending.pop(msg["id"], None)
                    if fut is None or fut.done():
                        continue
                    if "error" in msg:
                        fut.set_exception(CDPError(f"{msg['error']}"))
                    else:
                        fut.set_result(msg.get("result", {}))
                    continue
                for method, handler in self._handlers.get(msg.get("sessionId"), []):
                    if method == msg.get("method"):
                        handler(msg.get("params", {}))
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(CDPError("the browser connection closed"))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.send("Browser.close")
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader
        await self._ws.close()


class Tab:
    def __init__(self, browser: Browser, target: str, session: str) -> None:
        self.browser = browser
        self.target = target
        self.session = session
        self.console: list[str] = []  # console output and uncaught errors, for failure messages
        self.responses: list[tuple[int, str]] = []  # (status, url) of every response
        self._loaded: asyncio.Event = asyncio.Event()

    async def start(self) -> None:
        b, s = self.browser, self.session
        b.on(s, "Page.loadEventFired", lambda _p: self._loaded.set())
        b.on(s, "Runtime.consoleAPICalled", self._console)
        b.on(s, "Runtime.exceptionThrown", self._exception)
        b.on(s, "Network.responseReceived", self._response)
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        await self.send("Network.enable")

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.browser.send(method, params, self.session)

    async def goto(self, url: str, timeout: float = 15) -> None:
        self._loaded.clear()
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CDPError(f"{url}: {result['errorText']}")
        async with asyncio.timeout(timeout):
            await self._loaded.wait()

    async def reload(self, timeout: float = 15) -> None:
        self._loaded.clear()
        await self.send("Page.reload")
        async with asyncio.timeout(timeout):
            await self._loaded.wait()

    async def evaluate(self, expression: str, timeout: float = 30) -> Any:
        """The value of ``expression`` (a promise is awaited), as JSON."""
        async with asyncio.timeout(timeout):
            result = await self.send(
                "Runtime.evaluate",
                {"expression": expression, "awaitPromise": True, "returnByValue": True},
            )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"{expression[:80]!r}: {text}")
        return result["result"].get("value")

    async def close(self) -> None:
        await self.browser.send("Target.closeTarget", {"targetId": self.target})

    def _console(self, params: dict[str, Any]) -> None:
        args = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
        self.console.append(f"{params['type']}: {args}")

    def _response(self, params: dict[str, Any]) -> None:
        self.responses.append((params["response"]["status"], params["response"]["url"]))

    def _exception(self, params: dict[str, Any]) -> None:
        details = params["exceptionDetails"]
        self.console.append(
            "uncaught: " + (details.get("exception", {}).get("description") or details["text"])
        )


@contextlib.asynccontextmanager
async def launch(executable: str, timeout: float = 30) -> AsyncIterator[Browser]:
    """A headless chromium with a throwaway profile; its DevTools port is read
    from the DevToolsActivePort file it writes there."""
    with tempfile.TemporaryDirectory(prefix="ssehub-chromium-") as profile:
        proc = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            async with asyncio.timeout(timeout):
                while not port_file.exists() or len(port_file.read_text().split()) < 2:
                    if proc.poll() is not None:
                        raise CDPError(f"chromium exited with {proc.returncode}")
                    await asyncio.sleep(0.05)  # wait-ok: chromium writes the file once up
            port, path = port_file.read_text().split()[:2]
            ws = await websockets.connect(f"ws://127.0.0.1:{port}{path}", max_size=None)
            browser = Browser(ws)
            try:
                yield browser
            finally:
                await browser.close()
        finally:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            if proc.poll() is None:
                proc.kill()
                proc.wait()

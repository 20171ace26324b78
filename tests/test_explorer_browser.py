"""The explorer page in a real browser: headless Chromium driven over the DevTools protocol
(aiohttp's websocket client, already installed with `datasets`).

The test loads the page, clicks a head, hovers a token, sorts the statistics and checks what
changed, with real mouse events; no console error or exception and no request leaving the
file. Chromium (Debian package `chromium`) is installed when missing if we are root with
apt-get; otherwise the test is skipped with the reason. A screenshot of the final state is
saved next to the test's files, and to $NLPATTN_SCREENSHOT when set (docs/img/explorer.png).
Set $NLPATTN_EXPLORER_RUN (and $NLPATTN_EXPLORER_TEXT) to test the page of a real run.
"""
import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

aiohttp = pytest.importorskip("aiohttp", reason="aiohttp (a dependency of datasets) drives Chromium")

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TOKENS = ["[CLS]", "the", "cat", "sat", "on", "the", "mat", ",", "purring", ".", "[SEP]"]


def find_browser() -> str | None:
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def ensure_browser() -> str:
    """Chromium's path; installed with apt-get when missing (root only), else the test skips."""
    path = find_browser()
    if path:
        return path
    if not (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get")):
        pytest.skip("chromium is not installed and cannot be installed here (needs root and apt-get): "
                    "apt-get install chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "install", "-y", "chromium"], ["apt-get", "update"],
                ["apt-get", "install", "-y", "chromium"]):
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if cmd[1] == "install" and done.returncode == 0:
            break
    path = find_browser()
    if not path:
        pytest.skip(f"chromium could not be installed with apt-get: {done.stderr.strip()[-300:]}")
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless Chromium with a DevTools port; yields its DevTools HTTP address."""
    exe = ensure_browser()
    profile = tmp_path_factory.mktemp("chromium-profile")
    proc = subprocess.Popen([exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--disable-extensions", "--remote-debugging-port=0", f"--user-data-dir={profile}",
                             "--window-size=1400,1000", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline, address = time.monotonic() + 30, None
    while address is None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        found = re.search(r"DevTools listening on ws://([^/]+)/", line)
        address = found.group(1) if found else None
    if address is None:
        proc.kill()
        pytest.skip("chromium started but opened no DevTools port")
    try:
        yield address
    finally:
        proc.kill()
        proc.wait(timeout=10)


class Page:
    """A minimal DevTools client: commands by id, events collected in a list."""

    def __init__(self, ws):
        self.ws, self.next_id, self.pending, self.events = ws, 0, {}, []
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self):
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self.pending:
                self.pending.pop(data["id"]).set_result(data)
            elif "method" in data:
                self.events.append(data)

    async def send(self, method, **params):
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        await self.ws.send_str(json.dumps({"id": self.next_id, "method": method, "params": params}))
        reply = await asyncio.wait_for(fut, 20)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    async def js(self, expression):
        """The JSON value of a JavaScript expression evaluated in the page."""
        res = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    async def center(self, selector):
        """Viewport coordinates of the element's centre (scrolled into view when outside it)."""
        return await self.js(f"""(() => {{const e = document.querySelector({json.dumps(selector)});
            let r = e.getBoundingClientRect();
            if (r.top < 0 || r.bottom > innerHeight) {{e.scrollIntoView({{block: 'center'}});
                                                       r = e.getBoundingClientRect();}}
            return [r.x + r.width / 2, r.y + r.height / 2];}})()""")

    async def hover(self, selector):
        x, y = await self.center(selector)
        await self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)

    async def click(self, selector):
        x, y = await self.center(selector)
        await self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    async def wait_for(self, method, timeout=15):
        deadline = time.monotonic() + timeout
        while not any(e["method"] == method for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(method)
            await asyncio.sleep(0.05)


@pytest.fixture
def page_file(tmp_path):
    """The explorer of a real run ($NLPATTN_EXPLORER_RUN) or of a small random model."""
    from nlpattn.explorer import explorer_data, render_page

    run = os.environ.get("NLPATTN_EXPLORER_RUN")
    if run:
        data = explorer_data(run, text=os.environ.get("NLPATTN_EXPLORER_TEXT", "the movie was great ."))
    else:
        from nlpattn.config import ModelConfig
        from nlpattn.models import build_model
        from nlpattn.viz import attention_maps, page_data

        torch.manual_seed(0)
        cfg = ModelConfig(vocab_size=50, d_model=24, n_heads=3, d_ff=48, n_layers=2, max_len=32, dropout=0.0)
        model = build_model(cfg, "mlm", init_std=0.3)
        data = page_data(attention_maps(model, torch.randint(0, 50, (1, len(TOKENS)))), TOKENS, "explorer test")
        data["highlight"] = 0
    path = tmp_path / "explorer.html"
    path.write_text(render_page(data), encoding="utf-8")
    return path, data


READ = {  # what the test reads from the page, as JavaScript expressions
    "heads": "document.querySelectorAll('.thumb.head').length",
    "means": "document.querySelectorAll('.thumb.mean').length",
    "open": "document.getElementById('big').dataset.open",
    "cells": "document.querySelectorAll('#big .cell').length",
    "dimmed": "document.querySelectorAll('#big .cell.dim').length",
    "title": "document.getElementById('bigtitle').textContent",
    "cell": "document.querySelector('#big .cell[data-i=\"2\"][data-j=\"1\"]').title",
    "shade": "[...document.querySelectorAll('#qtoks .tok')].map(t => getComputedStyle(t).backgroundColor)",
    "under": "[...document.querySelectorAll('#qtoks .tok')].map(t => +(t.style.getPropertyValue('--under') || 0))",
    "entropy": "[...document.querySelectorAll('table.stats[data-sec=\"0\"] tbody tr')].map(r => +r.cells[2].textContent)",
    "hl": "[...document.querySelectorAll('#big .lab.yl.hl')].map(l => +l.dataset.i)",
}


async def drive(address: str, url: str) -> tuple[dict, list, bytes]:
    """Load `url`, click layer 2 · head 3, hover token 3, sort by entropy; what the page showed."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{address}/json/list") as reply:
            target = next(t for t in await reply.json() if t["type"] == "page")
        async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            page, seen = Page(ws), {}
            for domain in ("Runtime", "Log", "Network", "Page"):
                await page.send(f"{domain}.enable")
            await page.send("Emulation.setDeviceMetricsOverride", width=1400, height=1000,
                            deviceScaleFactor=1, mobile=False)
            await page.send("Page.navigate", url=url)
            await page.wait_for("Page.loadEventFired")
            seen["loaded"] = {k: await page.js(READ[k]) for k in ("heads", "means", "open")}
            await page.click('.thumb.head[data-sec="0"][data-layer="1"][data-head="2"]')
            seen["clicked"] = {k: await page.js(READ[k]) for k in ("open", "cells", "title", "cell", "shade", "hl")}
            await page.hover('#qtoks .tok[data-i="3"]')
            seen["hovered"] = {k: await page.js(READ[k]) for k in ("shade", "under", "dimmed")}
            await page.click('table.stats[data-sec="0"] th[data-key="entropy"]')
            seen["sorted"] = await page.js(READ["entropy"])
            await page.js("window.scrollTo(0, 0)")
            await page.hover('#qtoks .tok[data-i="3"]')
            shot = base64.b64decode((await page.send("Page.captureScreenshot", format="png"))["data"])
            await asyncio.sleep(0.2)  # late console messages
            page.reader.cancel()
            return seen, page.events, shot


def alpha(css: str) -> float:
    """Alpha of a computed `rgba(r, g, b, a)` / `rgb(r, g, b)` colour (transparent → 0)."""
    parts = re.findall(r"[\d.]+", css)
    return float(parts[3]) if len(parts) == 4 else (0.0 if css in ("", "transparent") else 1.0)


def test_explorer_in_chromium(browser, page_file, tmp_path):
    path, data = page_file
    start = time.monotonic()
    seen, events, shot = asyncio.run(drive(browser, path.resolve().as_uri()))
    sec = data["sections"][0]
    n_layers, n_heads, t = len(sec["layers"]), len(sec["layers"][0]), len(sec["queries"])
    n_heads_all = sum(len(s["layers"]) * len(s["layers"][0]) for s in data["sections"])
    assert seen["loaded"] == {"heads": n_heads_all, "means": sum(len(s["layers"]) for s in data["sections"]),
                              "open": "0"}
    # the large view opened on the clicked head, with its weights and token labels
    clicked = seen["clicked"]
    assert clicked["open"] == "1" and clicked["cells"] == t * len(sec["keys"])
    assert "layer 2 · head 3" in clicked["title"]
    w = sec["layers"][1][2]  # (T, S)
    assert clicked["cell"] == f"{sec['queries'][2]} → {sec['keys'][1]}: {100 * w[2][1]:.1f}%"
    if data["highlight"] is not None:  # classifier: the [CLS] row is marked and shades the tokens
        assert clicked["hl"] == [data["highlight"]]
        _assert_shades(clicked["shade"], w[data["highlight"]])
    # hovering token 3 shades what it attends to (row 3) and what attends to it (column 3)
    hovered = seen["hovered"]
    assert hovered["shade"] != clicked["shade"]
    _assert_shades(hovered["shade"], w[3])
    column = [row[3] for row in w]
    assert hovered["under"] == pytest.approx([c / max(column) for c in column], abs=2e-3)
    assert hovered["dimmed"] == t * len(sec["keys"]) - (t + len(sec["keys"]) - 1)
    assert seen["sorted"] == sorted(seen["sorted"]) and len(seen["sorted"]) == n_layers * n_heads
    # no console errors, no exceptions, nothing fetched from anywhere but the file itself
    errors = [e for e in events if e["method"] == "Runtime.exceptionThrown"
              or (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
              or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    assert errors == []
    urls = [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]
    assert urls and all(u.startswith(("file:", "data:", "about:")) for u in urls), urls
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "explorer.png").write_bytes(shot)
    if os.environ.get("NLPATTN_SCREENSHOT"):
        Path(os.environ["NLPATTN_SCREENSHOT"]).write_bytes(shot)
    assert time.monotonic() - start < 30


def _assert_shades(shades: list[str], row: list[float]) -> None:
    """Token j's blue shade is row[j] relative to the row's largest weight (which gets alpha 0.6)."""
    assert [alpha(s) for s in shades] == pytest.approx([0.6 * x / max(row) for x in row], abs=5e-3)

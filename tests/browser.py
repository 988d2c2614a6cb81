"""A real TensorBoard and a real browser for the end-to-end tests: TensorBoard on 127.0.0.1
at a port the OS picks, and Debian's headless Chromium driven by Playwright, which downloads
nothing (no ``playwright install``: the browser is /usr/bin/chromium).

TensorBoard's pages are Angular and Polymer with open shadow roots; Playwright's CSS
selectors pierce them, and the JavaScript below walks them where a selector is not enough
(the HParams table is a vaadin-grid that shows its cells through slots)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

from helpers import python

CHROMIUM = Path("/usr/bin/chromium")
# --no-sandbox: Chromium's sandbox refuses to run as root (CI runs as root). The rest keep a
# machine without a network quiet and quick: no GPU process, no QUIC, no first-run page,
# none of the background fetches (updates, sync, components) that would only be refused.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is absent (Debian's chromium package: apt-get install chromium)"
    return None


@contextlib.contextmanager
def tensorboard(logdir, *extra, timeout: float = 60):
    """``tensorboard --logdir LOGDIR`` on 127.0.0.1 at a port the OS picks, loading the
    logdir once (``--reload_interval 0``). Yields the base URL (``http://127.0.0.1:PORT``);
    the process is ended on the way out. Its output is kept in ``url.output`` (a list of
    lines, read on a thread so that the pipe never fills)."""
    proc = python(
        "-m",
        "tensorboard.main",
        "--logdir",
        logdir,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--reload_interval",
        "0",
        *extra,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output: list[str] = []
    try:
        port = None
        deadline = time.monotonic() + timeout
        while port is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                raise RuntimeError(
                    f"tensorboard exited with {proc.returncode}:\n" + "".join(output)
                )
            output.append(line)
            m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
            port = int(m.group(1)) if m else None
        if port is None:
            raise RuntimeError(
                f"tensorboard gave no address within {timeout} s:\n" + "".join(output)
            )
        threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True).start()
        yield Server(f"http://127.0.0.1:{port}", output)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Server(str):
    """The base URL of a TensorBoard, with its output so far."""

    def __new__(cls, url: str, output: list[str]):
        self = super().__new__(cls, url)
        self.output = output
        return self

    def get(self, path: str):
        with urllib.request.urlopen(self + path, timeout=5) as resp:
            return json.loads(resp.read())

    def wait_for_tags(self, plugin: str, want: dict[str, set[str]], timeout: float = 60):
        """Wait until TensorBoard serves, for each run in ``want``, ``plugin``'s data (scalars,
        images, ...) with at least the tags given. Returns what it serves."""
        deadline = time.monotonic() + timeout
        served: dict = {}
        while time.monotonic() < deadline:
            try:
                served = self.get(f"/data/plugin/{plugin}/tags")
            except (OSError, ValueError):
                served = {}
            if all(run in served and tags <= set(served[run]) for run, tags in want.items()):
                return served
            time.sleep(0.25)
        serves = sorted((run, sorted(tags)) for run, tags in served.items())
        raise AssertionError(
            f"TensorBoard did not serve the {plugin} {want} within {timeout} s; it serves {serves}"
        )


@contextlib.contextmanager
def chromium_page(viewport=(1600, 1000)):
    """A page in a fresh headless Chromium (a new, empty profile), closed on the way out."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.set_default_timeout(20_000)
            yield page
        finally:
            browser.close()


def screenshot_dir(tmp_path: Path) -> Path:
    """Where the screenshots go: $ECHO_RNN_SCREENSHOTS, else the test's tmp_path."""
    out = Path(os.environ.get("ECHO_RNN_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def screenshot(page, path: Path, full_page: bool = True) -> Path:
    """``path`` made a screenshot of the page (the whole page, or what the window shows)."""
    page.screenshot(path=str(path), full_page=full_page)
    print(f"screenshot: {path}")
    return path


# The HParams table as it is drawn: the header cells and the rows that are shown, each cell's
# text, and which header cells lie inside the table's visible width (no scrolling). vaadin-grid
# draws <th>/<td> in its shadow root and the text in light-DOM vaadin-grid-cell-content
# elements slotted into them; its virtual scroller keeps spare <tr>s, hidden, so only rows and
# cells with a size on the page count.
GRID_TEXT_JS = """grid => {
  const shown = el => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  const text = cell => {
    const slot = cell.querySelector('slot');
    if (!slot) return '';
    return slot.assignedElements({flatten: true}).map(e => e.innerText).join(' ').trim();
  };
  const root = grid.shadowRoot;
  const box = (root.querySelector('#scroller') || grid).getBoundingClientRect();
  const ths = [...root.querySelectorAll('thead tr th')].filter(shown);
  const inView = th => { const r = th.getBoundingClientRect();
                         return r.left >= box.left - 1 && r.right <= box.right + 1; };
  return {
    headers: ths.map(text),
    inView: ths.filter(inView).map(text),
    rows: [...root.querySelectorAll('tbody tr')].filter(tr => !tr.hidden && shown(tr))
        .map(tr => [...tr.querySelectorAll('td')].filter(shown).map(text)),
  };
}"""


def hparams_table(page) -> dict:
    """The HParams dashboard's table view as drawn: {"headers": [...], "inView": [the headers
    a person sees without scrolling], "rows": [[cell text, ...], ...]}."""
    return page.locator("tf-hparams-table-view vaadin-grid").evaluate(GRID_TEXT_JS)


# The time series cards drawn: each card's title and the text of its data table (the runs it
# draws, with their last values). Angular's components have no shadow roots.
SCALAR_CARDS_JS = """els => els.filter(el => el.getBoundingClientRect().height > 0).map(card => {
  const title = card.querySelector('.heading tb-truncated-path');
  const table = card.querySelector('scalar-card-data-table');
  return {title: title ? title.textContent.replace(/\\s+/g, '') : '',
          table: table ? table.innerText : ''};
})"""


def scalar_cards(page) -> list[dict]:
    """[{"title": ..., "table": ...}] of the time series dashboard's scalar cards drawn."""
    return page.locator("scalar-card-component").evaluate_all(SCALAR_CARDS_JS)

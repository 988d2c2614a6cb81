"""End to end, as a person sees it: two sweeps in one logdir, a real TensorBoard on 127.0.0.1,
and a real browser (Debian's headless Chromium, driven by Playwright) that opens the HParams
table, the time series of one run and the images, checks what is on the page and takes a
screenshot of each ($ECHO_RNN_SCREENSHOTS, else the test's tmp_path; the paths are printed).

Skipped where /usr/bin/chromium or the playwright package is absent (.ci/run installs both;
nothing is downloaded when the test runs)."""

import re
import subprocess
import time
from urllib.parse import quote, urlencode

import pytest

from browser import (
    chromium_missing,
    chromium_page,
    hparams_table,
    scalar_cards,
    screenshot,
    screenshot_dir,
    tensorboard,
)
from helpers import cli

pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed "
                    "(pip install -e \".[test]\")")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(chromium_missing() is not None,
                                 reason=chromium_missing() or "")]

# --- What the logdir holds, and what TensorBoard must show of it -----------------------------

# Two sweeps with the same points: runs that differ only in the sweep's name and --bias.
SWEEPS = {"plain": [], "biased": ["--bias"]}
SWEEP_FLAGS = ["--echo-steps", "1,2", "--hidden-sizes", "2", "--seeds", "0", "--steps", "40",
               "--eval-every", "10", "--log-every", "5", "--val-size", "32", "--batch-size", "8",
               "--seq-len", "12", "--workers", "1", "--device", "cpu"]
POINTS = ("k1-H2-s0", "k2-H2-s0")
# A run's trial name in the HParams table: its path under the logdir (the sweep's name
# included, so that the same point of two sweeps is two rows, not one).
RUNS = tuple(f"{sweep}/{point}" for sweep in SWEEPS for point in POINTS)
# The TensorBoard runs of a run RUN: RUN itself, RUN/train and RUN/val.
TRAIN, VAL = "train", "val"
# The settings the two sweeps vary: TensorBoard sorts the hparams that differ first and ticks
# the first five, so these must be columns without a click.
SWEPT_HPARAMS = ("echo_step", "bias")
# Metric columns as the HParams table heads them (GROUP.TAG, the group being the TensorBoard
# run under RUN): it ticks the first five metrics it sorts; these must be among them.
HELD_OUT_ACCURACY = f"{VAL}.accuracy"
METRIC_COLUMNS = (HELD_OUT_ACCURACY, f"{TRAIN}.loss", f"{VAL}.loss")
# Scalars: tag -> the TensorBoard runs under RUN that draw it (one loss card overlays both).
SCALAR_CARDS = {"loss": (TRAIN, VAL), "accuracy": (VAL,)}
# Images in RUN. The weight heatmaps are not tagged weights/U...: that tag is the weights'
# histogram, and a tag is one kind of summary in a TensorBoard run (with both, TensorBoard
# 2.21 showed neither the heatmap nor, with its default fast loader, the histogram).
IMAGES = ("weights/U heatmap", "weights/V heatmap", "weights/w heatmap", "held-out sequence",
          "training/gradient flow through time")
# The run whose time series and images are opened.
SHOWN_RUN = RUNS[0]

# A common screen: what fits on it is what a person sees without scrolling.
VIEWPORT = (1920, 1080)
# Chromium's wait for something on the page, and TensorBoard's for its logdir, in ms / s.
PAGE_TIMEOUT_MS = 20_000
LOAD_TIMEOUT_S = 60


def params(**values):
    """URL parameters (a space as %20: TensorBoard's hash reads no +)."""
    return urlencode(values, quote_via=quote)


def literal(text):
    """``text`` in a regular expression (JavaScript's too): its special characters escaped."""
    return re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", text)


def make_logdir(logdir):
    """The two sweeps, side by side (a process each)."""
    procs = {name: cli("sweep", "--name", name, *flags, *SWEEP_FLAGS, "--logdir", logdir,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for name, flags in SWEEPS.items()}
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"sweep {name}: exit {proc.returncode}\n{out}"
    for run in RUNS:
        for sub in ("", TRAIN, VAL):
            assert (logdir / run / sub).is_dir(), f"no run directory {run}/{sub} in {logdir}"


def check_hparams(page, base, shots):
    page.goto(f"{base}/#hparams")
    grid = page.locator("tf-hparams-table-view vaadin-grid")
    grid.wait_for()
    # rows come with the session groups' answer: wait for as many as there are runs, then
    # read the table (and report it) whatever came
    deadline = time.monotonic() + PAGE_TIMEOUT_MS / 1000
    table = hparams_table(page)
    while len(table["rows"]) < len(RUNS) and time.monotonic() < deadline:
        page.wait_for_timeout(200)
        table = hparams_table(page)
    page.wait_for_load_state("networkidle")
    table = hparams_table(page)
    shot = screenshot(page, shots / "hparams.png")

    headers, rows = table["headers"], table["rows"]
    where = f"HParams table (screenshot {shot}): headers {headers}, rows {rows}"
    assert headers[:1] == ["Trial ID"], where
    trials = [row[0] for row in rows]
    assert sorted(trials) == sorted(RUNS), (
        f"want one row per run, named by its path under the logdir; {where}")
    for column in (*SWEPT_HPARAMS, *METRIC_COLUMNS):
        assert column in headers, f"no {column!r} column without a click; {where}"
    # and the swept settings and held-out accuracy without scrolling either (on VIEWPORT the
    # table shows about nine columns; the rest are off to the right)
    for column in (*SWEPT_HPARAMS, HELD_OUT_ACCURACY):
        assert column in table["inView"], (
            f"the {column!r} column is off to the right (in view: {table['inView']}); {where}")
    # each row shows its own run's settings: the swept ones read back per run
    col = {name: headers.index(name) for name in SWEPT_HPARAMS}
    for row in rows:
        sweep, point = row[0].split("/")
        k = int(point.split("-")[0][1:])
        assert float(row[col["echo_step"]]) == k, f"row {row[0]}: echo_step; {where}"
        assert row[col["bias"]] == ("true" if "--bias" in SWEEPS[sweep] else "false"), (
            f"row {row[0]}: bias; {where}")
        accuracy = row[headers.index(HELD_OUT_ACCURACY)]
        assert 0 <= float(accuracy) <= 1, f"row {row[0]}: {HELD_OUT_ACCURACY}; {where}"


def check_scalars(page, base, shots):
    # the time series dashboard with its run and tag filters as a person would type them
    # (TensorBoard keeps them in the URL's query)
    query = params(runFilter=f"^{SHOWN_RUN}(/|$)",
                   tagFilter=f"^({'|'.join(map(literal, SCALAR_CARDS))})$")
    page.goto(f"{base}/?{query}#timeseries")
    page.locator("scalar-card-component").first.wait_for()
    titles = {}
    deadline = time.monotonic() + PAGE_TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        titles = {card["title"]: card["table"] for card in scalar_cards(page)}
        if all(f"{SHOWN_RUN}/{sub}" in titles.get(tag, "")
               for tag, subs in SCALAR_CARDS.items() for sub in subs):
            break
        page.wait_for_timeout(200)
    page.wait_for_load_state("networkidle")
    shot = screenshot(page, shots / "scalars.png")
    where = f"time series of {SHOWN_RUN} (screenshot {shot}): cards {sorted(titles)}"
    for tag, subs in SCALAR_CARDS.items():
        assert tag in titles, f"no {tag!r} card; {where}"
        for sub in subs:
            assert f"{SHOWN_RUN}/{sub}" in titles[tag], (
                f"the {tag!r} card does not draw {SHOWN_RUN}/{sub}: its table reads "
                f"{titles[tag]!r}; {where}")


# The images dashboard's panes, one per tag prefix: name, and whether it is open. It opens the
# first ones only (TensorBoard 2.21: the first two prefixes); the rest take a click.
IMAGE_PANES_JS = """els => els.map(pane => {
  const name = pane.shadowRoot.querySelector('.category-name');
  const body = pane.shadowRoot.querySelector('iron-collapse');
  return {name: name ? name.innerText.trim() : '', opened: !!body && body.opened};
})"""

# Each image card drawn: its title, its run, and whether its picture has loaded.
IMAGE_CARDS_JS = """els => els.map(card => {
  const img = card.shadowRoot.querySelector('img');
  const heading = card.shadowRoot.querySelector('tf-card-heading');
  const part = sel => {
    const e = heading.shadowRoot.querySelector(sel);
    return e ? e.innerText.trim() : '';
  };
  const box = img ? img.getBoundingClientRect() : {width: 0, height: 0};
  return {title: part('.heading-label.name'), run: part('#heading-run'),
          loaded: !!img && img.complete && img.naturalWidth > 0 && box.width > 0 && box.height > 0};
})"""


def image_cards(page, want):
    """The image cards of the page once those of SHOWN_RUN titled ``want`` have loaded, or
    what there is after PAGE_TIMEOUT_MS."""
    loaders = page.locator("tf-image-loader")
    cards = []
    deadline = time.monotonic() + PAGE_TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        cards = loaders.evaluate_all(IMAGE_CARDS_JS)
        if set(want) <= {c["title"] for c in cards if c["run"] == SHOWN_RUN and c["loaded"]}:
            break
        page.wait_for_timeout(200)
    page.wait_for_load_state("networkidle")
    return loaders.evaluate_all(IMAGE_CARDS_JS)


def check_images(page, base, shots):
    # the run's images as the dashboard first shows them: a pane per tag prefix, the first
    # ones open (printed, and in the screenshot, for a person to judge)
    page.goto(f"{base}/#images&{params(regexInput=f'^{SHOWN_RUN}$')}")
    page.locator("tf-image-loader").first.wait_for()
    image_cards(page, [tag for tag in IMAGES if "/" not in tag])
    panes = page.locator("tf-category-paginated-view:visible").evaluate_all(IMAGE_PANES_JS)
    print(f"images of {SHOWN_RUN}, panes as first shown: {panes}")
    screenshot(page, shots / "images.png")

    # and looked for by name, as a person would type them into the tag filter: every image
    # in the one pane of matches
    tags = f"^({'|'.join(map(literal, IMAGES))})$"
    page.goto(f"{base}/#images&{params(regexInput=f'^{SHOWN_RUN}$', tagFilter=tags)}")
    page.locator("tf-image-loader").first.wait_for()
    cards = image_cards(page, IMAGES)
    shot = screenshot(page, shots / "images-filtered.png")
    where = f"images of {SHOWN_RUN} (screenshot {shot}): cards {cards}"
    for tag in IMAGES:
        mine = [c for c in cards if c["title"] == tag and c["run"] == SHOWN_RUN]
        assert mine, f"no {tag!r} image; {where}"
        assert all(c["loaded"] for c in mine), f"the {tag!r} image did not load; {where}"


def check_default_run(page, tmp_path, shots):
    """``echo-rnn train`` at its defaults: held-out accuracy reaches 1.0 on TensorBoard's
    card at TensorBoard's defaults (smoothing 0.6, outliers ignored), and the one loss card
    draws training and held-out loss."""
    logdir = tmp_path / "default"
    proc = cli("train", "--logdir", logdir, "--run-name", "default")
    assert proc.returncode == 0, proc.stderr
    with tensorboard(logdir) as base:
        base.wait_for_tags("scalars", {"default/val": {"accuracy", "loss"},
                                       "default/train": {"loss"}}, timeout=LOAD_TIMEOUT_S)
        page.goto(f"{base}/?{params(tagFilter='^(accuracy|loss)$')}#timeseries")
        page.locator("scalar-card-component").first.wait_for()
        deadline, cards = time.monotonic() + PAGE_TIMEOUT_MS / 1000, {}
        while time.monotonic() < deadline and not all(
                run in cards.get(tag, "") for tag, run in
                (("accuracy", "default/val"), ("loss", "default/train"), ("loss", "default/val"))):
            page.wait_for_timeout(200)
            cards = {card["title"]: card["table"] for card in scalar_cards(page)}
        page.wait_for_load_state("networkidle")
        shot = screenshot(page, shots / "default-run.png")
    where = f"default run (screenshot {shot}): cards {cards}"
    # the card's table: run, smoothed, value, step, relative time
    row = cards["accuracy"].split("default/val")[1].split()
    assert float(row[0]) == 1.0 and float(row[1]) == 1.0, f"smoothed, value {row[:2]}; {where}"
    assert "default/train" in cards["loss"] and "default/val" in cards["loss"], where


def test_tensorboard_shows_two_sweeps_in_a_browser(tmp_path):
    start = time.monotonic()

    def done(what):
        print(f"{time.monotonic() - start:5.1f} s  {what}")

    logdir = tmp_path / "runs"
    make_logdir(logdir)
    done("two sweeps")
    shots = screenshot_dir(tmp_path)
    with tensorboard(logdir) as base:
        # the logdir is loaded once: wait until TensorBoard serves every run's curves and
        # some of its images (the pages wait for the rest, and say what they miss)
        base.wait_for_tags("scalars", {
            f"{run}/{sub}": {tag for tag, subs in SCALAR_CARDS.items() if sub in subs}
            for run in RUNS for sub in (TRAIN, VAL)}, timeout=LOAD_TIMEOUT_S)
        base.wait_for_tags("images", {run: set() for run in RUNS}, timeout=LOAD_TIMEOUT_S)
        done(f"TensorBoard at {base} has loaded {logdir}")
        with chromium_page(viewport=VIEWPORT) as page:
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            done("Chromium")
            check_hparams(page, base, shots)
            done("HParams")
            check_scalars(page, base, shots)
            done("time series")
            check_images(page, base, shots)
            done("images")
            check_default_run(page, tmp_path, shots)
            done("the default run")

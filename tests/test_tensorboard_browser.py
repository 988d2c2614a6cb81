"""End to end, as a person sees it: a sweep of 16 runs (two sweeps of 8 in one logdir), a real
TensorBoard on 127.0.0.1 and a real browser (Debian's headless Chromium, driven by Playwright)
that opens the HParams table and its parallel coordinates, the Scalars dashboard, the Time
Series dashboard and the images, checks what is drawn (lines, runs selected, the axis, the
pictures' size) and takes a screenshot of each ($ECHO_RNN_SCREENSHOTS, else the test's
tmp_path; the directory and paths are printed). The README's pictures are these screenshots.

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
    screenshot,
    screenshot_dir,
    tensorboard,
)
from helpers import cli, events

pytest.importorskip(
    "playwright.sync_api",
    reason='the playwright package is not installed (pip install -e ".[test]")',
)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(chromium_missing() is not None, reason=chromium_missing() or ""),
]

# --- What the logdir holds, and what TensorBoard must show of it -----------------------------

# Two sweeps with the same points: runs that differ in the sweep's name and --bias; some solve
# within the steps, most do not.
SWEEPS = {"plain": [], "biased": ["--bias"]}
SWEEP_FLAGS = [
    "--echo-steps",
    "1,2,3,4",
    "--hidden-sizes",
    "2,4",
    "--seeds",
    "0",
    "--steps",
    "150",
    "--eval-every",
    "25",
    "--log-every",
    "5",
    "--val-size",
    "32",
    "--batch-size",
    "8",
    "--seq-len",
    "12",
    "--workers",
    "1",
    "--device",
    "cpu",
]
POINTS = tuple(f"k{k}-H{h}-s0" for h in (2, 4) for k in (1, 2, 3, 4))
# A run's trial name in the HParams table and its name in the run selectors: its path under
# the logdir (the sweep's name included, so that the same point of two sweeps is two runs).
RUNS = tuple(f"{sweep}/{point}" for sweep in SWEEPS for point in POINTS)
# TensorBoard's runs: one per run (a sweep's heatmap is a file, not a run).
TB_RUNS = RUNS
# The settings the two sweeps vary: TensorBoard sorts the hparams that differ first and ticks
# the first five, so these must be columns without a click.
SWEPT_HPARAMS = ("echo_step", "hidden_size", "bias")
# Metric columns: TensorBoard ticks the first five metrics it sorts; these must be among them.
HELD_OUT_ACCURACY = "accuracy/val"
METRIC_COLUMNS = (HELD_OUT_ACCURACY, "loss/train", "loss/val", "solved", "solved_step")
# The cards the Scalars dashboard opens with (its first two panes), each drawing every run.
OPEN_CARDS = ("accuracy/val", "loss/train", "loss/val")
KERNEL_CARD = "training/kernel vs autograd (rounding units)"
# Images of a run. The weight heatmaps are not tagged weights/U...: that tag is the weights'
# histogram, and a tag is one kind of summary in a TensorBoard run (with both, TensorBoard
# 2.21 showed neither the heatmap nor, with its default fast loader, the histogram).
IMAGES = (
    "weights/U heatmap",
    "weights/V heatmap",
    "weights/w heatmap",
    "held-out sequence",
    "training/gradient flow through time",
)
SEQUENCE = "held-out sequence"
# The run whose images are opened.
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


def poll(read, done, timeout_ms=PAGE_TIMEOUT_MS, page=None):
    """``read()`` until ``done(value)`` or the timeout; the last value read."""
    deadline = time.monotonic() + timeout_ms / 1000
    value = read()
    while not done(value) and time.monotonic() < deadline:
        if page is not None:
            page.wait_for_timeout(200)
        else:
            time.sleep(0.2)
        value = read()
    return value


def make_logdir(logdir):
    """The two sweeps, side by side (a process each)."""
    procs = {
        name: cli(
            "sweep",
            "--name",
            name,
            *flags,
            *SWEEP_FLAGS,
            "--logdir",
            logdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for name, flags in SWEEPS.items()
    }
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"sweep {name}: exit {proc.returncode}\n{out}"
    for run in RUNS:
        assert (logdir / run).is_dir(), f"no run directory {run} in {logdir}"
        # one TensorBoard run per run: no train/ or val/ runs beside it
        assert not (logdir / run / "train").exists() and not (logdir / run / "val").exists()


def largest_accuracy(logdir):
    """The highest held-out accuracy any run reached, read from the events."""
    return max(e.value for run in RUNS for e in events(logdir / run).Scalars(HELD_OUT_ACCURACY))


# --- HParams ---------------------------------------------------------------------------------

# The parallel-coordinates plot: one path per session group drawn in its foreground.
PARALLEL_LINES_JS = """el => {
  const fg = el.shadowRoot.querySelector('svg g.foreground');
  return fg ? [...fg.querySelectorAll('path')].filter(p => (p.getAttribute('d') || '').length > 0
                                                         && p.style.display !== 'none').length
            : 0;
}"""


def check_hparams(page, base, shots):
    page.goto(f"{base}/#hparams")
    page.locator("tf-hparams-table-view vaadin-grid").wait_for()
    # rows come with the session groups' answer: wait for as many as there are runs
    table = poll(lambda: hparams_table(page), lambda t: len(t["rows"]) >= len(RUNS), page=page)
    page.wait_for_load_state("networkidle")
    table = hparams_table(page)
    shot = screenshot(page, shots / "hparams-table.png")
    headers, rows = table["headers"], table["rows"]
    where = f"HParams table (screenshot {shot}): headers {headers}, rows {rows}"
    assert headers[:1] == ["Trial ID"], where
    assert sorted(row[0] for row in rows) == sorted(RUNS), (
        f"want one row per run, named by its path under the logdir; {where}"
    )
    for column in (*SWEPT_HPARAMS, *METRIC_COLUMNS[:3]):
        assert column in headers, f"no {column!r} column without a click; {where}"
    for column in (*SWEPT_HPARAMS, HELD_OUT_ACCURACY):
        assert column in table["inView"], (
            f"the {column!r} column is off to the right (in view: {table['inView']}); {where}"
        )
    col = {name: headers.index(name) for name in (*SWEPT_HPARAMS, HELD_OUT_ACCURACY)}
    for row in rows:
        sweep, point = row[0].split("/")
        assert float(row[col["echo_step"]]) == int(point.split("-")[0][1:]), (row[0], where)
        assert row[col["bias"]] == ("true" if "--bias" in SWEEPS[sweep] else "false"), where
        assert 0 <= float(row[col[HELD_OUT_ACCURACY]]) <= 1, (row[0], where)
        # every metric shown has a value in every row (a blank cell drops the run's line)
        assert all(row[headers.index(m)] for m in METRIC_COLUMNS if m in headers), (row, where)

    # Before: 5 lines for 16 runs, the unsolved runs lacking solved_step
    page.get_by_text("PARALLEL COORDINATES VIEW").click()
    plot = page.locator("tf-hparams-parallel-coords-plot")
    plot.wait_for()
    lines = poll(lambda: plot.evaluate(PARALLEL_LINES_JS), lambda n: n >= len(RUNS), page=page)
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(500)
    shot = screenshot(page, shots / "hparams.png", full_page=False)
    assert lines == len(RUNS), (
        f"the parallel-coordinates view draws {lines} lines for {len(RUNS)} runs "
        f"(screenshot {shot})"
    )


# --- Scalars ---------------------------------------------------------------------------------

# Each Scalars card drawn: its tag, its last-point markers, and its curves' bounding boxes
# against the plot's (the y gridlines span the plot), one list per plot in the chart: with
# smoothing the smoothed curves are one plot, the faded raw curves another.
SCALAR_CHARTS_JS = """els => els.map(card => {
  const deep = (root, sel) => {  // the first match in root or in the shadow roots below it
    const hit = root.querySelector(sel);
    if (hit) return hit;
    for (const el of root.querySelectorAll('*')) {
      const found = el.shadowRoot ? deep(el.shadowRoot, sel) : null;
      if (found) return found;
    }
    return null;
  };
  const chart = deep(card.shadowRoot, 'vz-line-chart2');
  const root = chart ? (chart.shadowRoot || chart) : null;
  if (!root) return {tag: card.tag, plots: [], markers: 0, plot: null};
  const grid = root.querySelector('g.y-gridlines');
  const box = r => ({top: r.top, bottom: r.bottom});
  const plots = [...root.querySelectorAll('g.render-area')].map(area =>
      [...area.querySelectorAll('path.line')]
        .filter(p => (p.getAttribute('d') || '').length > 0)
        .map(p => box(p.getBoundingClientRect())))
    .filter(lines => lines.length > 0);
  return {tag: card.tag, plots, markers: root.querySelectorAll('path.symbol').length,
          plot: grid ? box(grid.getBoundingClientRect()) : null};
})"""


def scalar_charts(page):
    return {c["tag"]: c for c in page.locator("tf-scalar-card").evaluate_all(SCALAR_CHARTS_JS)}


def smoothed(chart):
    """The smoothed curves of a chart: of its plots, the one of least vertical extent (a
    moving average stays within the range of what it averages)."""
    if not chart["plots"]:
        return []
    return min(chart["plots"], key=lambda lines: sum(b["bottom"] - b["top"] for b in lines))


def crosses(line, plot):
    return line["bottom"] > plot["top"] and line["top"] < plot["bottom"]


def inside(line, plot, slack=2):
    return line["top"] >= plot["top"] - slack and line["bottom"] <= plot["bottom"] + slack


def check_scalars(page, base, shots, logdir):
    # Before: each run was three TensorBoard runs; 16 runs made 50, and past 40 TensorBoard
    # selects none: empty cards until a click.
    page.goto(f"{base}/#scalars")
    page.locator("tf-scalar-card").first.wait_for()
    boxes = page.locator("tf-multi-checkbox paper-checkbox")
    checked = poll(
        lambda: boxes.evaluate_all("els => els.map(e => e.checked)"),
        lambda c: len(c) >= len(TB_RUNS),
        page=page,
    )
    charts = poll(
        lambda: scalar_charts(page),
        lambda c: all(len(smoothed(c.get(t, {"plots": []}))) >= len(RUNS) for t in OPEN_CARDS),
        page=page,
    )
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(500)
    shot = screenshot(page, shots / "scalars.png", full_page=False)
    where = f"(screenshot {shot})"
    assert len(checked) == len(TB_RUNS) and all(checked), (
        f"runs selected: {checked.count(True)} of {len(checked)}, want all {len(TB_RUNS)} {where}"
    )
    for tag in OPEN_CARDS:
        # a curve per run, drawn where it can be seen, and a last-point marker per run
        assert tag in charts, f"no {tag!r} card open {where}: {sorted(charts)}"
        chart = charts[tag]
        assert chart["markers"] == len(RUNS), (tag, chart["markers"], where)
        curves = smoothed(chart)
        assert len(curves) == len(RUNS), (tag, len(curves), where)
        assert all(crosses(c, chart["plot"]) for c in curves), (tag, chart, where)

    # The kernel card: before, two points a run, drawn empty (TensorBoard scales a chart to
    # its points without the outermost ones: of two, none). Every run's curve is drawn, and
    # with "Ignore outliers in chart scaling" unticked every smoothed curve whole (the faded
    # raw curves are not counted in the scale: their peaks can run past it).
    # A run solved at its first evaluation has one comparison: a marker, no line.
    lines = sum(len(events(logdir / run).Scalars(KERNEL_CARD)) >= 2 for run in RUNS)
    page.goto(f"{base}/#scalars&{params(tagFilter=literal(KERNEL_CARD))}")
    kernel = poll(
        lambda: scalar_charts(page).get(KERNEL_CARD, {"plots": []}),
        lambda c: len(smoothed(c)) >= lines,
        page=page,
    )
    page.wait_for_timeout(1000)
    kernel = scalar_charts(page)[KERNEL_CARD]
    shot = screenshot(page, shots / "scalars-kernel.png", full_page=False)
    where = f"(screenshot {shot}): {kernel}"
    assert kernel["markers"] == len(RUNS), where
    assert len(smoothed(kernel)) == lines >= len(RUNS) - 2, where
    assert all(crosses(c, kernel["plot"]) for c in smoothed(kernel)), (
        f"a kernel curve lies wholly outside its plot {where}"
    )
    page.get_by_text("Ignore outliers in chart scaling").click()
    kernel = poll(
        lambda: scalar_charts(page)[KERNEL_CARD],
        lambda c: all(inside(line, c["plot"]) for line in smoothed(c)),
        page=page,
    )
    shot = screenshot(page, shots / "scalars-kernel-whole.png", full_page=False)
    outside = [line for line in smoothed(kernel) if not inside(line, kernel["plot"])]
    assert not outside, (
        f"outliers not ignored, the kernel card still cuts {len(outside)} "
        f"curves (screenshot {shot}): {kernel}"
    )


# --- Time Series -----------------------------------------------------------------------------

# A time series card: its title, the y axis's tick labels (the first axis), its data table.
TIME_SERIES_CARD_JS = """els => els
  .filter(el => el.getBoundingClientRect().height > 0).map(card => {
  const title = card.querySelector('.heading tb-truncated-path');
  const axes = card.querySelectorAll('line-chart-axis');
  const ticks = axes.length ? [...axes[0].querySelectorAll('text')].map(t => t.textContent.trim())
                            : [];
  const table = card.querySelector('scalar-card-data-table');
  return {title: title ? title.textContent.replace(/\\s+/g, '') : '', yTicks: ticks,
          table: table ? table.innerText : ''};
})"""


def time_series_card(page, title):
    cards = page.locator("scalar-card-component").evaluate_all(TIME_SERIES_CARD_JS)
    return next((c for c in cards if c["title"] == title), None)


def top_tick(card):
    return max(
        (float(t) for t in card["yTicks"] if re.fullmatch(r"-?[\d.]+(e-?\d+)?", t)),
        default=float("nan"),
    )


def check_time_series(page, base, shots, logdir):
    """The accuracy card of the sweep, as TensorBoard first shows it, and with "Ignore
    outliers in chart scaling" unticked: then its axis reaches the highest accuracy any run
    reached (1, for the runs that solved)."""
    want = largest_accuracy(logdir)
    assert want == 1.0, "no run of the sweep solved: nothing to see reach 1"
    page.goto(f"{base}/?{params(tagFilter=f'^{literal(HELD_OUT_ACCURACY)}$')}#timeseries")
    page.locator("scalar-card-component").first.wait_for()
    card = poll(
        lambda: time_series_card(page, HELD_OUT_ACCURACY),
        lambda c: c is not None and len(c["yTicks"]) > 1,
        page=page,
    )
    page.wait_for_load_state("networkidle")
    shot = screenshot(page, shots / "time-series.png", full_page=False)
    print(f"time series, outliers ignored (TensorBoard's default): y ticks {card['yTicks']}")
    checkbox = page.locator("mat-checkbox", has_text="Ignore outliers in chart scaling")
    if not checkbox.is_visible():  # the settings pane, closed
        page.get_by_text("Settings").first.click()
    checkbox.click()
    page.wait_for_timeout(1000)
    card = poll(
        lambda: time_series_card(page, HELD_OUT_ACCURACY), lambda c: top_tick(c) >= want, page=page
    )
    shot = screenshot(page, shots / "time-series-whole.png", full_page=False)
    assert top_tick(card) >= want, (
        f"outliers not ignored, the accuracy card's axis ends at {card['yTicks']}, below "
        f"{want} (screenshot {shot})"
    )


# --- Images ----------------------------------------------------------------------------------

# Each image card drawn: its title, its run, whether its picture has loaded, and the
# picture's own width against the width it is drawn at.
IMAGE_CARDS_JS = """els => els.map(card => {
  const img = card.shadowRoot.querySelector('img');
  const heading = card.shadowRoot.querySelector('tf-card-heading');
  const part = sel => {
    const e = heading.shadowRoot.querySelector(sel);
    return e ? e.innerText.trim() : '';
  };
  const box = img ? img.getBoundingClientRect() : {width: 0, height: 0};
  return {title: part('.heading-label.name'), run: part('#heading-run'),
          loaded: !!img && img.complete && img.naturalWidth > 0 && box.width > 0 && box.height > 0,
          natural: img ? img.naturalWidth : 0, shown: box.width};
})"""


def image_cards(page, want):
    """The image cards of the page once those of SHOWN_RUN titled ``want`` have loaded, or
    what there is after PAGE_TIMEOUT_MS."""
    loaders = page.locator("tf-image-loader")
    poll(
        lambda: loaders.evaluate_all(IMAGE_CARDS_JS),
        lambda cards: (
            set(want) <= {c["title"] for c in cards if c["run"] == SHOWN_RUN and c["loaded"]}
        ),
        page=page,
    )
    page.wait_for_load_state("networkidle")
    return loaders.evaluate_all(IMAGE_CARDS_JS)


def check_images(page, base, shots):
    # every image of a run, looked for by name as a person would type them into the filter
    tags = f"^({'|'.join(map(literal, IMAGES))})$"
    page.goto(f"{base}/#images&{params(regexInput=f'^{SHOWN_RUN}$', tagFilter=tags)}")
    page.locator("tf-image-loader").first.wait_for()
    cards = image_cards(page, IMAGES)
    shot = screenshot(page, shots / "images.png")
    where = f"images of {SHOWN_RUN} (screenshot {shot}): cards {cards}"
    for tag in IMAGES:
        mine = [c for c in cards if c["title"] == tag and c["run"] == SHOWN_RUN]
        assert mine, f"no {tag!r} image; {where}"
        assert all(c["loaded"] for c in mine), f"the {tag!r} image did not load; {where}"
    # the held-out sequence at its own size or larger, so its labels read as drawn (before:
    # a 477 px picture shrunk to 350, its labels 8 px high)
    seqs = [c for c in cards if c["title"] == SEQUENCE and c["run"] == SHOWN_RUN]
    assert all(c["shown"] >= c["natural"] - 1 for c in seqs), f"the sequence is shrunk; {where}"

    page.goto(
        f"{base}/?{params(tagFilter=f'^{literal(SEQUENCE)}$', runFilter=f'^{SHOWN_RUN}$')}"
        "#timeseries"
    )
    img = page.locator("image-card-component img").first
    img.wait_for()
    size = poll(
        lambda: img.evaluate("e => [e.naturalWidth, e.getBoundingClientRect().width]"),
        lambda s: s[0] > 0,
        page=page,
    )
    shot = screenshot(page, shots / "time-series-sequence.png", full_page=False)
    assert size[1] >= size[0] - 1, f"Time Series shrinks the sequence: {size} (screenshot {shot})"


# --- The default run -------------------------------------------------------------------------


def check_default_run(page, tmp_path, shots):
    """``echo-rnn train`` at its defaults: held-out accuracy reaches 1.0 on TensorBoard's
    card at TensorBoard's defaults (smoothing 0.6, outliers ignored), inside the axis."""
    logdir = tmp_path / "default"
    proc = cli("train", "--logdir", logdir, "--run-name", "default")
    assert proc.returncode == 0, proc.stderr
    with tensorboard(logdir) as base:
        base.wait_for_tags(
            "scalars",
            {"default": {HELD_OUT_ACCURACY, "loss/train", "loss/val"}},
            timeout=LOAD_TIMEOUT_S,
        )
        page.goto(f"{base}/?{params(tagFilter='^(accuracy|loss)/')}#timeseries")
        page.locator("scalar-card-component").first.wait_for()
        card = poll(
            lambda: time_series_card(page, HELD_OUT_ACCURACY),
            lambda c: c is not None and "default" in c["table"] and len(c["yTicks"]) > 1,
            page=page,
        )
        page.wait_for_load_state("networkidle")
        shot = screenshot(page, shots / "default-run.png", full_page=False)
        where = f"default run (screenshot {shot}): card {card}"
        # the card's table: run, smoothed, value, step, relative time
        row = card["table"].split("default")[1].split()
        assert float(row[0]) == 1.0 and float(row[1]) == 1.0, f"smoothed, value {row[:2]}; {where}"
        assert top_tick(card) >= 1.0, f"the axis ends below 1; {where}"

        # its held-out sequence (T = 50) at its own size: before, 477 px drawn 370 px wide
        page.goto(f"{base}/?{params(tagFilter=f'^{literal(SEQUENCE)}$')}#timeseries")
        img = page.locator("image-card-component img").first
        img.wait_for()
        size = poll(
            lambda: img.evaluate("e => [e.naturalWidth, e.getBoundingClientRect().width]"),
            lambda s: s[0] > 0,
            page=page,
        )
        shot = screenshot(page, shots / "default-run-sequence.png", full_page=False)
        assert size[1] >= size[0] - 1, f"the sequence is shrunk: {size} (screenshot {shot})"

        # training and held-out loss overlaid in one chart of the Custom Scalars dashboard
        page.goto(f"{base}/#custom_scalars")
        chart = page.locator("tf-custom-scalar-multi-line-chart-card").first
        chart.wait_for()
        drawn = poll(
            lambda: chart.evaluate(f"el => ({SCALAR_CHARTS_JS})([el])[0]"),
            lambda c: len(smoothed(c)) >= 2,
            page=page,
        )
        shot = screenshot(page, shots / "default-run-custom-scalars.png", full_page=False)
        assert len(smoothed(drawn)) == 2, f"want loss/train and loss/val: {drawn} ({shot})"


def test_tensorboard_shows_a_sweep_in_a_browser(tmp_path):
    start = time.monotonic()

    def done(what):
        print(f"{time.monotonic() - start:5.1f} s  {what}")

    logdir = tmp_path / "runs"
    make_logdir(logdir)
    done(f"two sweeps, {len(RUNS)} runs")
    shots = screenshot_dir(tmp_path)
    print(f"screenshots in {shots}")
    with tensorboard(logdir) as base:
        # the logdir is loaded once: wait until TensorBoard serves every run's curves and
        # images (the pages wait for the rest, and say what they miss)
        base.wait_for_tags(
            "scalars", {run: set(OPEN_CARDS) for run in RUNS}, timeout=LOAD_TIMEOUT_S
        )
        base.wait_for_tags("images", {run: set() for run in RUNS}, timeout=LOAD_TIMEOUT_S)
        done(f"TensorBoard at {base} has loaded {logdir}")
        with chromium_page(viewport=VIEWPORT) as page:
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            done("Chromium")
            check_hparams(page, base, shots)
            done("HParams")
            check_scalars(page, base, shots, logdir)
            done("Scalars")
            check_time_series(page, base, shots, logdir)
            done("Time Series")
            check_images(page, base, shots)
            done("images")
            check_default_run(page, tmp_path, shots)
            done("the default run")

"""The pictures TensorBoard shows: bounded in size whatever H or T is, cheap to build, and
carrying what a reader needs (colours that mean signs, unit numbers, t from 1, zero
gradients that do not vanish, a sweep title that is not cut)."""

import tracemalloc

import numpy as np
import pytest
import torch

from echo_rnn.run import tblog
from echo_rnn.run.tblog import axis_ticks, flow_rgb, heatmap_rgb, sequence_rgb
from echo_rnn.tables import heatmap_image

WIDTHS = (tblog.MIN_WIDTH, tblog.MAX_WIDTH)


def _bounded(img, max_height=700):
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert WIDTHS[0] <= img.shape[1] <= WIDTHS[1] and img.shape[0] <= max_height


@pytest.mark.parametrize("H", [1, 6, 300, 4096])
def test_weight_pictures_are_bounded_whatever_h(H):
    for shape in ((H, H), (H, 1), (H,), (1, H)):
        _bounded(heatmap_rgb(torch.randn(*shape)))


def test_a_4096_matrix_is_reduced_before_any_picture_is_made():
    m = np.random.default_rng(0).standard_normal((4096, 4096)).astype(np.float32)
    tracemalloc.start()
    try:
        img = heatmap_rgb(m)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    _bounded(img)
    assert peak < 200e6  # a cell^2-sized picture of it would be gigabytes


def test_heatmap_colours_mean_signs():
    m = torch.tensor([[1.0, -1.0], [0.0, 0.5]])
    img, (x0, y0, x1, y1) = tblog._heatmap(m)
    cw, ch = (x1 - x0) / 2, (y1 - y0) / 2

    def cell(i, j):  # the middle of row i, column j (0-based)
        px = img[
            int(y0 + (i + 0.5) * ch) - 2 : int(y0 + (i + 0.5) * ch) + 2,
            int(x0 + (j + 0.5) * cw) - 2 : int(x0 + (j + 0.5) * cw) + 2,
        ].reshape(-1, 3)
        return px.mean(axis=0)

    r, g, b = cell(0, 0)
    assert r > 200 and g < 60 and b < 60  # +max: red
    r, g, b = cell(0, 1)
    assert b > 200 and r < 60 and g < 60  # -max: blue
    assert (cell(1, 0) > 250).all()  # 0: white
    r, g, b = cell(1, 1)
    assert r > 200 and 100 < g < 160  # +max/2: pale red


def test_heatmap_numbers_rows_and_columns():
    img, (x0, y0, x1, y1) = tblog._heatmap(torch.randn(6, 6))
    dark = img.min(axis=2) < 128
    assert dark[y0:y1, : x0 - 2].any()  # row labels, left of the matrix
    assert dark[y0 - 14 : y0 - 2, x0:x1].any()  # column labels, above it
    # a label per unit at H = 6: six separate runs of dark rows left of the matrix
    rows = dark[y0:y1, : x0 - 2].any(axis=1).astype(int)
    assert np.count_nonzero(np.diff(rows) == 1) + rows[0] == 6


def test_axis_ticks_start_at_1_end_at_n_and_never_crowd():
    assert axis_ticks(1, 16, 30) == [1]
    assert axis_ticks(6, 40, 20) == [1, 2, 3, 4, 5, 6]
    for n, px in ((50, 8), (2000, 0.2), (10**6, 400 / 10**6), (7, 3)):
        ticks = axis_ticks(n, px, 40)
        assert ticks[0] == 1 and all(1 <= t <= n for t in ticks)
        assert ticks == sorted(set(ticks))
        assert all((b - a) * px >= 40 for a, b in zip(ticks, ticks[1:]))
        if (n - 1) * px >= 40:
            assert ticks[-1] == n and len(ticks) >= 2
    assert len(axis_ticks(2000, 0.2, 40)) >= 5  # several, not just the two ends


@pytest.mark.parametrize("T", [1, 50, 2000, 100_000])
def test_sequence_picture_is_bounded_whatever_t(T):
    x = (torch.rand(T) > 0.5).float()
    _bounded(sequence_rgb(x, x, torch.rand(T) * 1.4 - 0.2), max_height=200)


@pytest.mark.parametrize("T", [1, 12, 50, 333, 100_000])
def test_sequence_picture_fits_tensorboards_card(T):
    # Before: 477 px wide at T = 50; TensorBoard shrinks a picture wider than its card (370
    # px in Time Series) and the labels came out 8 px high, unreadable. At CARD_WIDTH or
    # less it is shown at its own size, its 11-12 px text as drawn; nothing cut at the edges
    x = (torch.rand(T) > 0.5).float()
    img = sequence_rgb(x, x, torch.rand(T))
    assert img.shape[1] <= tblog.CARD_WIDTH
    white = (img == 255).all(axis=2)
    assert white[:, -2:].all() and white[-2:].all()  # the key and the ticks end inside


def test_sequence_picture_shows_the_values_and_a_key():
    T = 50
    x, y = torch.ones(T), torch.zeros(T)
    img = sequence_rgb(x, y, torch.full((T,), 0.5))
    lum = img.mean(axis=2)
    # the three rows: input all black, target all white, prediction mid grey, in that order
    middle = lum[:, img.shape[1] // 2]
    assert (middle < 10).any() and (np.abs(middle - 127) < 10).any()
    first_black = np.nonzero(middle < 10)[0][0]
    first_grey = np.nonzero(np.abs(middle - 127) < 10)[0][0]
    assert first_black < first_grey
    # the key at the bottom: a black swatch and a grey one
    bottom = lum[-30:]
    assert (bottom < 10).any() and (np.abs(bottom - 140) < 5).any()


def test_sequence_and_flow_number_time_from_1_to_t(monkeypatch):
    asked = []

    def spy(n, px_per_unit, min_gap_px):
        asked.append(n)
        return axis_ticks(n, px_per_unit, min_gap_px)

    monkeypatch.setattr(tblog, "axis_ticks", spy)
    sequence_rgb(torch.ones(37), torch.ones(37), torch.ones(37))
    flow_rgb(torch.ones(41))
    assert asked == [37, 41]  # ticks chosen among 1..T (axis_ticks' own test pins them down)


@pytest.mark.parametrize("T", [1, 50, 2000, 100_000])
def test_flow_picture_is_bounded_whatever_t(T):
    img = flow_rgb(torch.logspace(0, -8, T))
    assert img.shape == (150, 360, 3) and img.dtype == np.uint8


def _orange(img):
    r, g, b = (img[..., c].astype(int) for c in range(3))
    return (r > 200) & (g > 80) & (g < 150) & (b < 60)


def test_flow_picture_marks_zero_norms_at_the_bottom():
    norms = torch.logspace(-2, -6, 40)
    with_zeros = norms.clone()
    with_zeros[25:] = 0
    plain, marked = flow_rgb(norms), flow_rgb(with_zeros)
    assert not _orange(plain).any()
    rows, cols = np.nonzero(_orange(marked))
    low = rows > marked.shape[0] * 0.6  # the marks in the bottom band (the note is at the top)
    assert low.any()
    inside = low & (cols > 60)  # on the plot, not the orange 0 on the axis beside it
    assert cols[inside].min() > marked.shape[1] * 0.5  # steps 26..40: the axis' right part
    assert rows.min() < 20  # and a note in the top line says so
    assert _orange(flow_rgb(torch.zeros(5))).any()  # all zero: still drawn


def test_flow_picture_labels_every_decade_when_few():
    img = flow_rgb(torch.logspace(-1, -4, 30))
    left = img[:, 14:44].min(axis=2) < 128  # the decade labels' column
    runs = np.count_nonzero(np.diff(left.any(axis=1).astype(int)) == 1)
    assert runs >= 4  # 1e-1 .. 1e-4 (and the t label below)


def _summary(ks, Hs, skip=()):
    return [
        {
            "echo_step": k,
            "hidden_size": H,
            "seeds": 2,
            "solved": 1,
            "solve_rate": 0.5,
            "median_steps_to_solve": 1234.0,
        }
        for H in Hs
        for k in ks
        if (k, H) not in skip
    ]


def _background_edges(img):
    white = (img == 255).all(axis=2)
    return white[:2].all() and white[-2:].all() and white[:, :2].all() and white[:, -2:].all()


@pytest.mark.parametrize(
    "ks,Hs", [([3], [8]), (list(range(1, 10)), [8]), (list(range(1, 61)), list(range(1, 41)))]
)
def test_sweep_heatmap_is_whole_and_bounded(ks, Hs):
    img = heatmap_image(_summary(ks, Hs), ks, Hs)
    assert 300 <= img.shape[1] <= 640 and img.shape[0] <= 640
    assert _background_edges(img)  # nothing, the title included, runs off the figure
    dark = img.min(axis=2) < 100
    assert dark[:20].any()  # the title is there, near the top


def test_sweep_heatmap_says_which_cells_were_not_run():
    ks, Hs = [1, 2], [4, 8]
    full = heatmap_image(_summary(ks, Hs), ks, Hs)
    missing = heatmap_image(_summary(ks, Hs, skip={(2, 8)}), ks, Hs)
    assert _background_edges(missing)

    # the legend: a hatched grey patch and its words below the axes, absent when all ran
    def grey(img):  # a 3 x 3 patch of the "not run" grey: a swatch, not anti-aliased text
        g = (np.abs(img.astype(int) - 0xD9) < 3).all(axis=2)
        return (
            g[:-2, :-2]
            & g[1:-1, :-2]
            & g[2:, :-2]
            & g[:-2, 1:-1]
            & g[1:-1, 1:-1]
            & g[2:, 1:-1]
            & g[:-2, 2:]
            & g[1:-1, 2:]
            & g[2:, 2:]
        )

    bottom = slice(int(full.shape[0] * 0.85), None)
    assert not grey(full)[bottom].any() and grey(missing)[bottom].any()


def test_sweep_heatmap_leaves_matplotlib_alone():
    import matplotlib

    backend, rc = matplotlib.get_backend(), dict(matplotlib.rcParams)
    heatmap_image(_summary([1], [2]), [1], [2])
    assert matplotlib.get_backend() == backend and dict(matplotlib.rcParams) == rc


def test_a_label_drawn_from_its_cached_mask_is_what_pil_draws():
    """tblog._text pastes a label through a mask rendered once; pixel for pixel it is
    ImageDraw.text's, at whole and fractional positions, in colour, and cut at every edge."""
    import numpy as np
    from PIL import Image, ImageDraw

    from echo_rnn.run import tblog

    for font in (tblog._font(), tblog._font(tblog.FONT_PX - 1)):
        for text in ("prediction (t)", "0", "1e-12", "[0, 1]", "Ag"):
            for xy in [(4, 3), (-3.5, -2.25), (95.3, 18.7), (-10, 5), (10.5, 0.75)]:
                for fill in ("black", (230, 110, 0)):
                    theirs = Image.new("RGB", (100, 24), (200, 220, 240))
                    ours = theirs.copy()
                    ImageDraw.Draw(theirs).text(xy, text, fill=fill, font=font)
                    tblog._text(ours, xy, text, fill=fill, font=font)
                    assert np.array_equal(np.asarray(ours), np.asarray(theirs)), (text, xy)


def test_a_flow_picture_too_short_for_its_plot_is_refused_not_drawn_forever():
    """flow_rgb at a height that leaves no room between the title and the t axis looped
    forever looking for a decade spacing; it is a ValueError that says what is missing."""
    with pytest.raises(ValueError, match="height 60 leaves .* px for the plot"):
        flow_rgb(torch.tensor([0.0, 1e-3, 1.0]), 300, 60)
    assert flow_rgb(torch.tensor([0.0, 1e-3, 1.0]), 300, 150).shape == (150, 300, 3)


def test_a_label_cut_at_the_top_or_left_edge_is_drawn_by_pil_itself():
    """Negative positions go to ImageDraw.text: PIL's bitmap font (no FreeType) rounds them
    otherwise than the cached mask would."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default_imagefont()
    for xy in [(-3.5, 4), (4, -2.25), (-0.5, -0.5)]:
        theirs = Image.new("RGB", (60, 20), "white")
        ours = theirs.copy()
        ImageDraw.Draw(theirs).text(xy, "t = 10", fill="black", font=font)
        tblog._text(ours, xy, "t = 10", fill="black", font=font)
        assert np.array_equal(np.asarray(ours), np.asarray(theirs)), xy

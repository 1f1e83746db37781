import itertools
import math
import xml.etree.ElementTree as ET

import pytest

from llmbus.jobs.report_charts import (
    ORIGINAL_COLOUR,
    REPLAY_COLOUR,
    bin_counts,
    format_number,
    histogram,
    nice_ticks,
    paired_histogram,
    scatter,
)

NS = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # noqa: S314 - our own output, not untrusted input
    assert root.tag == f"{NS}svg"
    assert root.get("class") == "chart"
    assert root.get("role") == "img"
    assert root.get("aria-label")
    return root


def by_class(root: ET.Element, cls: str) -> list[ET.Element]:
    return [e for e in root.iter() if cls in (e.get("class") or "").split()]


def texts(root: ET.Element, cls: str) -> list[str]:
    return [e.text or "" for e in by_class(root, cls)]


def axis_ticks(root: ET.Element, axis: str) -> list[str]:
    (group,) = [g for g in root.iter(f"{NS}g") if g.get("class") == f"axis {axis}"]
    return texts(group, "tick")


def test_nice_ticks_use_1_2_5_steps() -> None:
    assert nice_ticks(0, 1) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1])
    ticks = nice_ticks(0, 137)
    assert ticks[0] == 0
    assert ticks[-1] >= 137
    step = ticks[1] - ticks[0]
    assert step in (10, 20, 25, 50)
    assert 4 <= len(ticks) <= 8
    assert nice_ticks(0, 12_000)[-1] >= 12_000
    assert nice_ticks(-3, 7) == [-5, 0, 5, 10]
    assert nice_ticks(0, 3, integer=True) == [0, 1, 2, 3]
    assert all(t == int(t) for t in nice_ticks(0, 2, integer=True))


@pytest.mark.parametrize(("lo", "hi"), [(0, 1), (0, 137), (0.013, 0.0871), (950, 12_345), (5, 5)])
def test_nice_ticks_cover_the_range_with_about_five_even_steps(lo: float, hi: float) -> None:
    ticks = nice_ticks(lo, hi)
    assert ticks[0] <= lo
    assert ticks[-1] >= hi
    assert 3 <= len(ticks) <= 8
    steps = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1
    (step,) = steps
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert round(mantissa, 6) in (1, 2, 5)


def test_numbers_are_compact() -> None:
    assert format_number(12_000) == "12,000"
    assert format_number(3.0) == "3"
    assert format_number(0.25) == "0.25"
    assert format_number(1 / 3) == "0.333"
    assert format_number(12_345.6) == "12,346"
    assert format_number(12.35, 2) == "12.35"


def test_bin_counts_put_edges_and_strays_in_a_bin() -> None:
    assert bin_counts([0, 0.3, 0.35, 1.0, 1.0000001, -0.01], bins=10, lo=0, hi=1) == [
        2, 0, 0, 2, 0, 0, 0, 0, 0, 2,
    ]  # fmt: skip
    assert bin_counts([float("nan"), 0.5], bins=2, lo=0, hi=1) == [0, 1]
    with pytest.raises(ValueError, match="bins"):
        bin_counts([1], bins=0, lo=0, hi=1)


def test_histogram_bars_match_bin_counts() -> None:
    values = [0.05, 0.5, 0.55, 0.58, 0.91, 1.0]
    root = parse(histogram(values, title="Similarity", x_label="similarity", lo=0, hi=1))
    bars = by_class(root, "mark")
    counts = [int(b.get("data-count", "-1")) for b in bars]
    assert counts == bin_counts(values, bins=10, lo=0, hi=1) == [1, 0, 0, 0, 0, 3, 0, 0, 0, 2]
    assert all(b.tag == f"{NS}rect" for b in bars)
    heights = [float(b.get("height", "0")) for b in bars]
    assert heights[5] > heights[9] > heights[1] == 0  # 3 values, 2 values, none
    hover = [b.findtext(f"{NS}title") for b in bars]
    assert hover[5] == "0.5 to 0.6: 3 pairs"


def test_histogram_has_title_axes_ticks_and_grid() -> None:
    root = parse(histogram([0.2, 0.7], title="Similarity", x_label="similarity", lo=0, hi=1))
    assert root.findtext(f"{NS}title") == "Similarity"
    assert texts(root, "chart-title") == ["Similarity"]
    assert texts(root, "axis-label") == ["similarity", "pairs"]
    assert axis_ticks(root, "x") == ["0", "0.2", "0.4", "0.6", "0.8", "1"]
    assert axis_ticks(root, "y")[0] == "0"
    assert by_class(root, "grid")
    assert len(by_class(root, "grid")[0]) >= 6


def test_large_tick_values_are_readable() -> None:
    root = parse(histogram([100, 12_000], title="t", x_label="tokens"))
    assert "10,000" in axis_ticks(root, "x")


def test_text_is_escaped() -> None:
    svg = histogram([1], title="<b>", x_label='a "q" & b', y_label="<i>")
    assert "<b>" not in svg
    assert "<i>" not in svg
    root = parse(svg)
    assert root.findtext(f"{NS}title") == "<b>"
    assert texts(root, "axis-label") == ['a "q" & b', "<i>"]
    assert root.get("aria-label", "").startswith("<b>: ")
    root = parse(scatter([(1, 2)], title="<b>", x_label="<x>", y_label="<y>"))
    assert by_class(root, "mark")[0].findtext(f"{NS}title") == "<x>: 1, <y>: 2"


@pytest.mark.parametrize(
    "svg",
    [
        histogram([], title="Empty", x_label="x"),
        histogram([float("nan")], title="Empty", x_label="x", lo=0, hi=1),
        paired_histogram([], [], title="Empty", x_label="ms"),
        scatter([], title="Empty", x_label="a", y_label="b"),
    ],
)
def test_empty_input_says_no_data(svg: str) -> None:
    root = parse(svg)
    assert texts(root, "no-data") == ["no data"]
    assert not by_class(root, "mark")
    assert not by_class(root, "legend")
    assert "no data" in root.get("aria-label", "")
    assert len(texts(root, "axis-label")) == 2
    assert len(axis_ticks(root, "x")) >= 2
    assert all(not t.startswith("-") for t in axis_ticks(root, "y"))


@pytest.mark.parametrize("values", [[5.0], [5.0, 5.0, 5.0], [0.0], [-2.0, -2.0]])
def test_single_or_equal_values_get_a_sane_range(values: list[float]) -> None:
    root = parse(histogram(values, title="t", x_label="x"))
    assert sum(int(b.get("data-count", "0")) for b in by_class(root, "mark")) == len(values)
    ticks = [float(t.replace(",", "")) for t in axis_ticks(root, "x")]
    assert ticks[0] < values[0] < ticks[-1]
    assert len(set(ticks)) == len(ticks) >= 2
    assert "nan" not in ET.tostring(root, encoding="unicode").lower()
    root = parse(scatter([(values[0], values[0])], title="t", x_label="a", y_label="b"))
    assert len(by_class(root, "mark")) == 1


def test_paired_histogram_shares_bins_and_has_a_legend() -> None:
    original = [10.0, 12.0, 30.0, 55.0, 120.0]
    replay = [11.0, 14.0, 15.0, 140.0]
    root = parse(paired_histogram(original, replay, title="TTFT", x_label="TTFT (ms)", bins=6))
    old, new = by_class(root, "original"), by_class(root, "replay")
    assert len(old) == len(new) == 6
    assert [int(b.get("data-count", "0")) for b in old] == bin_counts(
        original, bins=6, lo=10, hi=140
    )
    assert [int(b.get("data-count", "0")) for b in new] == bin_counts(replay, bins=6, lo=10, hi=140)
    assert {b.get("fill") for b in old} == {ORIGINAL_COLOUR}
    assert {b.get("fill") for b in new} == {REPLAY_COLOUR}
    # Side by side in the same bin: the replay bar starts where the original one ends.
    assert float(new[0].get("x", "0")) > float(old[0].get("x", "0"))
    assert float(new[0].get("x", "0")) < float(old[1].get("x", "0"))
    (legend,) = by_class(root, "legend")
    assert [t.text for t in legend.iter(f"{NS}text")] == ["original", "replay"]
    assert texts(root, "axis-label") == ["TTFT (ms)", "requests"]


def test_paired_histogram_with_one_side_empty_still_draws() -> None:
    root = parse(paired_histogram([], [3.0, 3.0], title="t", x_label="ms", bins=4))
    assert sum(int(b.get("data-count", "0")) for b in by_class(root, "replay")) == 2
    assert sum(int(b.get("data-count", "0")) for b in by_class(root, "original")) == 0
    assert not texts(root, "no-data")


def test_scatter_dots_and_diagonal() -> None:
    points = [(100.0, 120.0), (250.0, 240.0), (1_300.0, 900.0)]
    root = parse(scatter(points, title="Tokens", x_label="original", y_label="replay"))
    dots = by_class(root, "mark")
    assert len(dots) == 3
    assert all(d.tag == f"{NS}circle" for d in dots)
    assert dots[0].findtext(f"{NS}title") == "original: 100, replay: 120"
    assert dots[2].findtext(f"{NS}title") == "original: 1,300, replay: 900"
    (diagonal,) = by_class(root, "diagonal")
    assert diagonal.get("stroke-dasharray")
    assert texts(root, "diagonal-label") == ["y = x"]
    # Same range on both axes, so the reference line runs corner to corner.
    assert axis_ticks(root, "x") == axis_ticks(root, "y")
    x_group, y_group = (g for g in root.iter(f"{NS}g") if g.get("class", "").startswith("axis"))
    x_ticks, y_ticks = by_class(x_group, "tick"), by_class(y_group, "tick")
    assert diagonal.get("x1") == x_ticks[0].get("x")
    assert diagonal.get("y1") == y_ticks[0].get("y")
    assert diagonal.get("x2") == x_ticks[-1].get("x")
    assert diagonal.get("y2") == y_ticks[-1].get("y")


def test_scatter_without_diagonal_scales_axes_separately() -> None:
    root = parse(scatter([(0, 0), (1, 1000)], title="t", x_label="a", y_label="b", diagonal=False))
    assert not by_class(root, "diagonal")
    assert len(by_class(root, "mark")) == 2
    assert axis_ticks(root, "x")[-1] == "1"
    assert axis_ticks(root, "y")[-1] == "1,000"

"""Tests for sb_angcl.evaluation.plots: the DET plot's tick labels and axis limits, PNG output.

The DET checks measure the figure as drawn: tick-label bounding boxes from
matplotlib's renderer must not overlap, and the axis limits must hold every
operating point of the curve (rates strictly between 0 and 1) and the minDCF
operating point, computed here independently from the scores.
"""

import sys

import numpy as np
import pytest
from scipy.stats import norm

from sb_angcl.evaluation.metrics import compute_min_dcf
from sb_angcl.evaluation.plots import plot_det, plot_score_histogram


def _scores(n_tar, n_non, shift, seed):
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n_tar, bool), np.zeros(n_non, bool)]
    scores = np.r_[rng.normal(shift, 1.0, n_tar), rng.normal(0.0, 1.0, n_non)]
    return scores, labels


def _visible_labels(fig, axis):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    lo, hi = sorted(axis.get_view_interval())
    return [
        (lab.get_text(), lab.get_window_extent(renderer))
        for tick, lab in zip(axis.get_majorticklocs(), axis.get_ticklabels())
        if lab.get_visible() and lab.get_text() and lo <= tick <= hi
    ]


@pytest.mark.parametrize(
    "n_tar, n_non, shift",
    [
        (40, 160, 2.0),  # tiny set, coarse steps
        (1000, 5000, 2.5),  # > 4000 thresholds: the curve is thinned
        (300, 60000, 2.5),  # CN-Celeb-like: many non-targets, minDCF at high miss
        (500, 500, 0.5),  # poor system
    ],
)
def test_det_labels_do_not_overlap_and_axes_hold_curve(tmp_path, n_tar, n_non, shift):
    pytest.importorskip("matplotlib")
    scores, labels = _scores(n_tar, n_non, shift, seed=n_tar + n_non)
    fig = plot_det(scores, labels, tmp_path / "det.png")
    ax = fig.axes[0]

    for axis in (ax.xaxis, ax.yaxis):
        shown = _visible_labels(fig, axis)
        assert len(shown) >= 4, [t for t, _ in shown]
        for i, (text_a, box_a) in enumerate(shown):
            for text_b, box_b in shown[i + 1 :]:
                assert not box_a.overlaps(box_b), f"tick labels {text_a!r} and {text_b!r} overlap"

    # Every point of the curve with finite probit coordinates lies inside.
    tar, non = np.sort(scores[labels]), np.sort(scores[~labels])
    thresholds = np.unique(scores)
    p_miss = np.searchsorted(tar, thresholds, side="right") / len(tar)
    p_fa = 1 - np.searchsorted(non, thresholds, side="right") / len(non)
    rates = np.r_[p_miss, p_fa]
    inner = rates[(rates > 0) & (rates < 1)]
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    assert x0 <= norm.ppf(inner.min()) and norm.ppf(inner.max()) <= x1
    assert y0 <= norm.ppf(inner.min()) and norm.ppf(inner.max()) <= y1

    # The minDCF operating point is inside and marked where it belongs.
    _, th = compute_min_dcf(scores, labels)
    m, f = np.mean(scores[labels] <= th), np.mean(scores[~labels] > th)
    marker = next(line for line in ax.get_lines() if line.get_label().startswith("minDCF"))
    mx, my = float(marker.get_xdata()[0]), float(marker.get_ydata()[0])
    assert x0 <= mx <= x1 and y0 <= my <= y1  # rate 0 or 1: drawn on the edge
    if 0 < f < 1:
        assert mx == pytest.approx(norm.ppf(f), abs=1e-9)
    if 0 < m < 1:
        assert my == pytest.approx(norm.ppf(m), abs=1e-9)
    if n_non == 60000:  # the case the old fixed 60 % top edge cut off
        assert m > 0.6 and norm.ppf(m) < y1


def test_det_labels_are_percentages_of_round_rates(tmp_path):
    pytest.importorskip("matplotlib")
    scores, labels = _scores(2000, 20000, 2.5, seed=1)
    fig = plot_det(scores, labels, tmp_path / "det.png")
    ax = fig.axes[0]
    texts = [lab.get_text() for lab in ax.get_xticklabels()]
    assert "10" in texts and "50" in texts
    for tick, lab in zip(ax.get_xticks(), ax.get_xticklabels()):
        assert norm.cdf(tick) * 100 == pytest.approx(float(lab.get_text()), rel=1e-6)


def test_plots_written(tmp_path):
    pytest.importorskip("matplotlib")
    scores, labels = _scores(1000, 5000, 2.0, seed=11)
    for fn, name in ((plot_det, "det.png"), (plot_score_histogram, "hist.png")):
        path = tmp_path / "plots" / name
        fn(scores, labels, path)
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_plots_check_input_and_name_the_missing_package(tmp_path, monkeypatch):
    for fn in (plot_det, plot_score_histogram):
        with pytest.raises(ValueError, match="no target"):
            fn([0.1, 0.2], [0, 0], tmp_path / "x.png")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    for fn in (plot_det, plot_score_histogram):
        with pytest.raises(ImportError, match=r"pip install sb-angcl\[plot\]"):
            fn([0.1, 0.9], [0, 1], tmp_path / "x.png")

"""Pictures of a verification result: DET curve and score histogram (PNG).

matplotlib (``pip install sb-angcl[plot]``) is imported only when drawing, on
an Agg canvas (no display, no pyplot state).

Authors
 * sb-angcl contributors 2025
"""

import logging
import os

import numpy as np
import torch

from sb_angcl.evaluation.metrics import _scores_labels, det_curve, operating_points

logger = logging.getLogger(__name__)

#: Resolution of the written PNGs (dots per inch).
DPI = 120

# Margin, in probit units, between the outermost curve point and the axes edge.
_MARGIN = 0.25

# Pixels kept free between two neighbouring tick labels.
_LABEL_GAP = 6.0


def _new_figure(figsize):
    """An Agg-backed matplotlib Figure (clear ImportError without matplotlib)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            "plotting needs matplotlib: pip install sb-angcl[plot] (or pip install matplotlib)"
        ) from err
    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _probit(p):
    return torch.special.ndtri(torch.as_tensor(np.asarray(p, dtype=np.float64))).numpy()


def _det_ticks():
    """Candidate DET ticks (1, 2, 5 per decade, mirrored above 0.5), rank and prerequisites.

    Rank 0: powers of ten and 0.5, 1: fives, 2: twos; a five is labelled only
    with the powers of ten on both sides, a two only with its decade's 1 and 5.
    """
    rows = [(0.5, 0, ())]
    for exponent in range(-9, 0):
        one, five = 10.0**exponent, 5 * 10.0**exponent
        for t, rank, needs in (
            (one, 0, ()),
            (2 * one, 2, (one, five)),
            (five, 1, (one, 10 * one)),
        ):
            if t < 0.5:
                rows.append((t, rank, needs))
                rows.append((1.0 - t, rank, tuple(1.0 - n for n in needs)))
    rows.sort()
    return np.array([r[0] for r in rows]), np.array([r[1] for r in rows]), [r[2] for r in rows]


def _percent_label(rate):
    """Tick text of a rate in percent: 0.001 -> '0.1', 0.999 -> '99.9'."""
    return np.format_float_positional(round(100.0 * float(rate), 9), trim="-")


def _set_ticks(axis, ticks):
    axis.set_ticks(_probit(ticks))
    axis.set_ticklabels([_percent_label(t) for t in ticks])


def _no_overlap_ticks(fig, axis, ticks, rank, needs):
    """Keeps the labels of ``axis`` (all ``ticks`` set) that do not overlap, others as minor ticks.

    Admitted by rank, then from the middle outwards, when their prerequisites
    are and their box (plus :data:`_LABEL_GAP` pixels) meets no admitted one.
    """
    fig.canvas.draw()  # places the tick labels
    renderer = fig.canvas.get_renderer()
    boxes = [lab.get_window_extent(renderer) for lab in axis.get_ticklabels()]
    position = {round(float(t), 12): i for i, t in enumerate(ticks)}
    kept = []
    for i in np.lexsort((np.abs(_probit(ticks)), rank)):
        needed = [position.get(round(n, 12)) for n in needs[i]]
        if any(k is not None and k not in kept for k in needed):
            continue
        box = boxes[i].padded(_LABEL_GAP)
        if not any(box.overlaps(boxes[k]) for k in kept):
            kept.append(i)
    kept = np.sort(np.asarray(kept, dtype=np.int64))
    _set_ticks(axis, ticks[kept])
    axis.set_ticks(_probit(np.delete(ticks, kept)), minor=True)


def plot_det(scores, labels, path, p_target=0.01, c_miss=1.0, c_fa=1.0, title=None,
             points=None):
    """Draws a DET curve (probit axes) with its EER and minDCF points into a PNG; returns the Figure.

    The axes hold every point with rates strictly between 0 and 1; rates of 0
    or 1 are drawn on the edge; tick labels (%) do not overlap.

    ``path``'s folders are created; ``p_target``, ``c_miss``, ``c_fa`` give
    the minDCF point; ``points``: the scores'
    :func:`~sb_angcl.evaluation.metrics.operating_points`, when already computed.
    """
    thresholds, p_miss, p_fa = det_curve(scores, labels)
    # The curve starts at "accept every trial" (no miss, every false alarm).
    p_miss = np.concatenate([[0.0], p_miss])
    p_fa = np.concatenate([[1.0], p_fa])
    points = points or operating_points(scores, labels, p_target, c_miss, c_fa)
    eer, dcf, dcf_th = points["EER"], points["minDCF"], points["minDCF_threshold"]
    j = 0 if np.isinf(dcf_th) else int(np.searchsorted(thresholds, dcf_th)) + 1

    rates = np.concatenate([p_miss, p_fa, [eer]])
    inner = rates[(rates > 0) & (rates < 1)]
    lo, hi = (inner.min(), inner.max()) if inner.size else (1e-3, 0.5)
    limits = (float(_probit(lo)) - _MARGIN, float(_probit(hi)) + _MARGIN)
    x = np.clip(_probit(p_fa), *limits)
    y = np.clip(_probit(p_miss), *limits)
    dcf_point = x[j], y[j]
    # Thin the curve to one point per cell of a fine grid (millions of
    # thresholds would otherwise make a huge, slow figure).
    if len(x) > 4000:
        grid = 2000
        scale = grid / (limits[1] - limits[0])
        cx = np.floor((x - limits[0]) * scale).astype(np.int64)
        cy = np.floor((y - limits[0]) * scale).astype(np.int64)
        _, keep = np.unique(cx * (grid + 1) + cy, return_index=True)
        keep = np.union1d(keep, [0, len(x) - 1])
        x, y = x[keep], y[keep]

    fig = _new_figure((5, 5))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(x, y, lw=1.5, label="DET")
    pe = float(np.clip(_probit(eer), *limits))
    # Markers on the edge (a rate of 0 or 1) are drawn whole, not clipped.
    ax.plot([pe], [pe], "o", clip_on=False, label=f"EER {100 * eer:.2f}%")
    ax.plot(*dcf_point, "s", clip_on=False, label=f"minDCF {dcf:.3f} (p={p_target:g})")
    ax.set_xlim(*limits)
    ax.set_ylim(*limits)
    ax.set_xlabel("False alarm rate (%)")
    ax.set_ylabel("Miss rate (%)")
    ax.legend(loc="upper right", fontsize=8)
    if title:
        ax.set_title(title)
    ticks, rank, needs = _det_ticks()
    inside = np.flatnonzero((_probit(ticks) >= limits[0]) & (_probit(ticks) <= limits[1]))
    ticks, rank, needs = ticks[inside], rank[inside], [needs[i] for i in inside]
    for axis in (ax.xaxis, ax.yaxis):
        _set_ticks(axis, ticks)
    fig.tight_layout()
    for axis in (ax.xaxis, ax.yaxis):
        _no_overlap_ticks(fig, axis, ticks, rank, needs)
    # Fewer labels only widen the axes, so the kept labels stay apart.
    fig.tight_layout()
    ax.grid(True, which="major", alpha=0.4)
    ax.grid(True, which="minor", alpha=0.15)
    _save(fig, path)
    return fig


def plot_score_histogram(scores, labels, path, bins=100, title=None, points=None):
    """Draws target and non-target score densities (``bins`` shared) and the EER threshold.

    Arguments as :func:`plot_det`.
    """
    s, lab = _scores_labels(scores, labels)
    points = points or operating_points(s, lab)
    eer, th = points["EER"], points["EER_threshold"]
    edges = np.histogram_bin_edges(s, bins=bins)
    fig = _new_figure((6, 4))
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(s[~lab], bins=edges, density=True, alpha=0.5, label=f"non-target ({(~lab).sum()})")
    ax.hist(s[lab], bins=edges, density=True, alpha=0.5, label=f"target ({lab.sum()})")
    ax.axvline(th, color="k", ls="--", lw=1, label=f"EER threshold ({100 * eer:.2f}%)")
    ax.set_xlabel("score")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    _save(fig, path)
    return fig


def _save(fig, path):
    folder = os.path.dirname(os.fspath(path))
    if folder:
        os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    logger.info("wrote %s", path)

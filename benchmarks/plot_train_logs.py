"""Curves from training logs: alpha, the attention's weight spread, margins.

Reads ``train_log.txt`` of one or more runs (:func:`train_log.read_train_log`)
and draws, per epoch, the balancing weight alpha (the weight of AAM-softmax)
and the 5th-95th percentile band of the class-aware attention's negative-pair
weights, one line (and band) per run, labelled ``LABEL=PATH``::

    python benchmarks/plot_train_logs.py --output docs/alpha_curves.png \\
        "MGDA-UB as specified=runs/paper/seed1/train_log.txt" \\
        "alpha >= 0.3, smoothed=runs/mgda_bounded/seed1/train_log.txt"

The last line printed is ``ratio <mean alpha of the last run / of the first>``
over the last epoch.

Authors
 * sb-angcl contributors
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from train_log import read_train_log  # noqa: E402


def main(argv=None):
    """Command line entry point.

    Arguments
    ---------
    argv : list of str, optional
        Arguments.

    Returns
    -------
    float
        Last-epoch alpha of the last run over the first.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=TRAIN_LOG")
    parser.add_argument("--output", required=True, help="PNG file")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_a, ax_w) = plt.subplots(1, 2, figsize=(10, 3.8))
    last = []
    for spec in args.runs:
        # LABEL=PATH, where either may hold "=": split where a file starts.
        cuts = [i for i, c in enumerate(spec) if c == "=" and os.path.isfile(spec[i + 1:])]
        label, path = (spec[:cuts[0]], spec[cuts[0] + 1:]) if cuts else (spec, spec)
        rows = read_train_log(path)
        if not rows:
            raise SystemExit(f"{path}: no epoch lines (is it a SpeechBrain train_log.txt?)")
        epochs = [r["epoch"] for r in rows]
        alpha = [r.get("train alpha", float("nan")) for r in rows]
        (line,) = ax_a.plot(epochs, alpha, marker="o", ms=3, label=label)
        if any("train w_p5" in r for r in rows):
            low = [r.get("train w_p5", float("nan")) for r in rows]
            high = [r.get("train w_p95", float("nan")) for r in rows]
            ax_w.fill_between(epochs, low, high, alpha=0.25, color=line.get_color())
            ax_w.plot(epochs, low, color=line.get_color(), lw=1, label=label)
            ax_w.plot(epochs, high, color=line.get_color(), lw=1)
        last.append(alpha[-1])
        print(f"{label}: alpha by epoch " + " ".join(f"{a:.3f}" for a in alpha))
    ax_a.set_xlabel("epoch")
    ax_a.set_ylabel("alpha (weight of AAM-softmax)")
    ax_a.set_ylim(0, 1)
    ax_a.grid(alpha=0.3)
    ax_a.legend(fontsize=7)
    ax_w.set_xlabel("epoch")
    ax_w.set_ylabel("negative-pair weight, 5th-95th percentile")
    ax_w.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax_w.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    fig.savefig(args.output, dpi=110)
    print(f"Written: {args.output}")
    ratio = last[-1] / last[0] if last[0] else float("nan")
    print(f"ratio {ratio:.3f}")
    return ratio


if __name__ == "__main__":
    main()

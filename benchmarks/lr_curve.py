"""Plot the learning-rate curve of a full-size recipe YAML.

The schedule (``lr_annealing``, a :class:`sb_angcl.training.lr_schedule.WarmupDecayScheduler`)
is read from the YAML itself, so the figure is what that file trains with.
The optimiser steps per epoch come from the balanced sampler's rule
(``ceil(n / K)`` groups per speaker, ``P x R`` groups a global step) applied
to the training set's size; the default is VoxCeleb1 dev + VoxCeleb2 dev
(7,205 speakers, 1,240,651 utterances) on 4 GPUs. With ``--train_log`` the
rates logged at the end of each epoch of a real run (``train_log.txt``) are
drawn on top.

Usage::

    python benchmarks/lr_curve.py --out docs/lr_curve_voxceleb12_4gpu.png
    python benchmarks/lr_curve.py --gpus 1 --utterances 148642 --speakers 1211 \\
        --train_log results/ecapa_angcl/1986/train_log.txt

Authors
 * sb-angcl contributors
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from train_log import read_train_log  # noqa: E402

from sb_angcl.hyperparams import load_hparams  # noqa: E402

DEFAULT_YAML = os.path.join(
    ROOT, "recipes", "VoxCeleb", "SpeakerRec", "hparams", "train_ecapa_angcl.yaml"
)


def schedule_curve(scheduler, steps_per_epoch):
    """The rate of every optimiser step of a whole run.

    Arguments
    ---------
    scheduler : WarmupDecayScheduler
        The schedule (its own step counter is not touched).
    steps_per_epoch : int
        Optimiser steps per epoch (per rank).

    Returns
    -------
    epochs, lrs : list of float
        Fractional epoch and rate of each step ``0 .. E * steps_per_epoch``.

    Example
    -------
    >>> s = WarmupDecayScheduler(1e-3, 1e-5, 2, warmup_epochs=1)
    >>> epochs, lrs = schedule_curve(s, 2)
    >>> epochs, [round(x, 6) for x in lrs]
    ([0.0, 0.5, 1.0, 1.5, 2.0], [0.0, 0.0005, 0.001, 0.0001, 1e-05])
    """
    total = int(round(scheduler.number_of_epochs * steps_per_epoch))
    epochs = [s / steps_per_epoch for s in range(total + 1)]
    return epochs, [scheduler.lr_at_epoch(e) for e in epochs]


def balanced_steps_per_epoch(utterance_counts, speakers_per_batch, utterances_per_speaker, num_gpus=1):
    """Optimiser steps per epoch of the balanced sampler, per rank (estimate).

    Each speaker with ``n`` utterances gives ``ceil(n / K)`` groups; a global
    step takes ``P * R`` groups (see
    :class:`~sb_angcl.data.sampler.SpeakerBalancedBatchSampler`, whose exact count
    can be a little lower when one speaker owns very many groups).

    Arguments
    ---------
    utterance_counts : list of int
        Utterance count of every training speaker.
    speakers_per_batch : int
        ``P`` (per rank).
    utterances_per_speaker : int
        ``K``.
    num_gpus : int
        ``R``, the DDP world size.

    Example
    -------
    >>> balanced_steps_per_epoch([8, 8, 5, 3], 2, 4)
    3
    """
    k = utterances_per_speaker
    groups = sum(-(-n // k) for n in utterance_counts)
    return max(groups // (speakers_per_batch * num_gpus), 1)


def logged_rates(path):
    """``(epoch, lr)`` pairs of a SpeechBrain ``train_log.txt``.

    The rate logged with epoch ``e`` is the optimiser's at the end of that
    epoch, i.e. the schedule at ``e`` epochs done.

    Arguments
    ---------
    path : str
        The train log.

    Returns
    -------
    list of (int, float)
    """
    return [(row["epoch"], row["lr"]) for row in read_train_log(path) if "lr" in row]


def main(argv=None):
    """Write the figure and print the schedule's key numbers.

    Arguments
    ---------
    argv : list of str or None
        Command line.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hparams", default=DEFAULT_YAML)
    parser.add_argument("--speakers", type=int, default=7205)
    parser.add_argument("--utterances", type=int, default=1240651)
    parser.add_argument("--gpus", type=int, default=4)
    parser.add_argument("--train_log", default=None)
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "lr_curve_voxceleb12_4gpu.png"))
    args = parser.parse_args(argv)

    hparams = load_hparams(args.hparams, {"data_folder": "unused", "out_n_neurons": 1})
    sched = hparams["lr_annealing"]
    P, K = hparams["speakers_per_batch"], hparams["utterances_per_speaker"]
    # Utterances spread evenly over the speakers: sum ceil(n/K) is then exact
    # up to one group per speaker.
    base, extra = divmod(args.utterances, args.speakers)
    counts = [base + 1] * extra + [base] * (args.speakers - extra)
    steps = balanced_steps_per_epoch(counts, P, K, num_gpus=args.gpus)
    epochs, lrs = schedule_curve(sched, steps)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(epochs, lrs, label=type(sched).__name__)
    if args.train_log:
        logged = logged_rates(args.train_log)
        ax.plot([e for e, _ in logged], [lr for _, lr in logged], "o", ms=3, label="train_log.txt")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_title(
        f"{os.path.basename(args.hparams)}: {args.utterances:,} utts, {args.gpus} GPU(s), "
        f"{P}x{K} per GPU\n{steps} steps/epoch per GPU, {len(epochs) - 1} steps in all",
        fontsize=8,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"steps_per_epoch {steps}")
    print(f"total_steps {len(epochs) - 1}")
    print(f"peak {max(lrs):.3g} at epoch {epochs[lrs.index(max(lrs))]:.2f}; final {lrs[-1]:.3g}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

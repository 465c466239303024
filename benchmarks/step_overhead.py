"""Training-step overhead of the contrastive objective and its balancers.

Times one whole training step, :meth:`sb_angcl.training.brain.AngularContrastiveBrain.fit_batch`
(features, encoder forward, losses, balancing, backward, optimiser step), of
the same small ECAPA-TDNN on the same fixed batch for five variants:

* ``aam``: AAM-softmax alone (the baseline);
* ``supcon``: + SupCon (fixed weight 0.5, margin 0, no attention);
* ``amsupcon_caa``: + AM-SupCon (margin 0.2) + class-aware attention, fixed 0.5;
* ``mgda_ub``: the same balanced by MGDA-UB, the paper's system (two extra
  ``autograd.grad`` calls on the embedding);
* ``mgda``: the same balanced by MGDA on the encoder parameters (two extra
  backward passes through the encoder).

Every variant has its own copy of the *same* initial weights (and its own Adam
optimiser), sees the same batch of random waveforms with P x K speaker labels,
and runs without augmentation (augmentation would add the same cost to every
variant, so leaving it out makes the ratios conservative). After warm-up the
variants are run round-robin, the starting variant rotating every repeat, so
that machine noise hits all of them alike; the table reports the median.
The last line is ``ratio <mgda_ub / aam>``, the paper system's step time over
AAM-softmax alone.

Usage::

    python benchmarks/step_overhead.py                  # CPU, C=128, 32 x 2 s
    python benchmarks/step_overhead.py --device cuda --channels 1024 --batch 128
    python benchmarks/step_overhead.py --quick          # seconds: smoke test

Authors
 * sb-angcl contributors
"""

import argparse
import copy
import logging
import statistics
import sys
import time

import speechbrain as sb
import torch
from bench_report import median_ci, recorded  # benchmarks/ is this script's folder
from speechbrain.lobes.features import Fbank
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper
from speechbrain.processing.features import InputNormalization

from sb_angcl.objective.balancing import make_balancer
from sb_angcl.objective.joint import JointObjective
from sb_angcl.objective.losses import AngularSupConLoss
from sb_angcl.training.brain import AngularContrastiveBrain

logger = logging.getLogger(__name__)

#: Variant name -> (contrastive margin or None for no contrastive loss,
#: attention temperature or None, balancing, description).
VARIANTS = {
    "aam": (None, None, "fixed", "AAM-softmax alone"),
    "supcon": (0.0, None, "fixed", "+ SupCon (fixed 0.5, m=0, no attention)"),
    "amsupcon_caa": (0.2, 1.0 / 30, "fixed", "+ AM-SupCon + CAA (fixed 0.5)"),
    "mgda_ub": (0.2, 1.0 / 30, "mgda_ub", "+ MGDA-UB (the paper's system)"),
    "mgda": (0.2, 1.0 / 30, "mgda", "+ MGDA on encoder parameters"),
}


def make_batch(batch_size, utts_per_speaker, seconds, num_classes, sample_rate=16000, seed=0):
    """A fixed training batch: random waveforms with P x K speaker labels.

    Arguments
    ---------
    batch_size : int
        Utterances (a multiple of ``utts_per_speaker``).
    utts_per_speaker : int
        K, utterances per speaker.
    seconds : float
        Clip length.
    num_classes : int
        Classifier size; the batch's speakers are drawn from it.
    sample_rate : int
        Samples per second.
    seed : int
        Random seed.

    Returns
    -------
    speechbrain.dataio.batch.PaddedBatch
        With ``id``, ``sig`` and ``spk_id_encoded``.

    Example
    -------
    >>> b = make_batch(6, 2, 0.25, 10)
    >>> b.sig.data.shape, b.spk_id_encoded.data.reshape(-1).unique().numel()
    (torch.Size([6, 4000]), 3)
    """
    if batch_size % utts_per_speaker:
        raise ValueError(
            f"--batch {batch_size} is not a multiple of --utts-per-speaker {utts_per_speaker}"
        )
    speakers = batch_size // utts_per_speaker
    if speakers > num_classes:
        raise ValueError(f"{speakers} speakers per batch but only --classes {num_classes}")
    gen = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(num_classes, generator=gen)[:speakers]
    labels = chosen.repeat_interleave(utts_per_speaker)
    samples = int(seconds * sample_rate)
    return sb.dataio.batch.PaddedBatch([
        {
            "id": f"utt{i}",
            "sig": 0.1 * torch.randn(samples, generator=gen),
            "spk_id_encoded": labels[i : i + 1],
        }
        for i in range(batch_size)
    ])


def build_modules(channels, n_mels, emb_dim, num_classes, seed=0):
    """Features, normaliser, ECAPA-TDNN encoder and cosine classifier.

    Arguments
    ---------
    channels : int
        ECAPA-TDNN width C.
    n_mels : int
        Filterbank channels.
    emb_dim : int
        Embedding size.
    num_classes : int
        Training speakers of the classifier.
    seed : int
        Seed of the initial weights.

    Returns
    -------
    dict
        ``compute_features``, ``mean_var_norm``, ``embedding_model``, ``classifier``.

    Example
    -------
    >>> sorted(build_modules(16, 20, 8, 5))
    ['classifier', 'compute_features', 'embedding_model', 'mean_var_norm']
    """
    torch.manual_seed(seed)
    return {
        "compute_features": Fbank(n_mels=n_mels),
        "mean_var_norm": InputNormalization(norm_type="sentence", std_norm=False),
        "embedding_model": ECAPA_TDNN(
            n_mels,
            channels=[channels] * 4 + [3 * channels],
            kernel_sizes=[5, 3, 3, 3, 1],
            dilations=[1, 2, 3, 4, 1],
            attention_channels=max(channels // 2, 8),
            lin_neurons=emb_dim,
        ),
        "classifier": Classifier(emb_dim, out_neurons=num_classes),
    }


def build_brain(variant, modules, device="cpu", lr=0.002):
    """An :class:`AngularContrastiveBrain` for one variant on a copy of ``modules``.

    Arguments
    ---------
    variant : str
        A key of :data:`VARIANTS`.
    modules : dict
        From :func:`build_modules`; deep-copied so every variant starts from
        the same weights.
    device : str
        Torch device.
    lr : float
        Adam learning rate.

    Returns
    -------
    AngularContrastiveBrain
        Ready for ``fit_batch`` (``on_fit_start`` called, modules in train mode).

    Example
    -------
    >>> brain = build_brain("mgda_ub", build_modules(16, 20, 8, 5))
    >>> type(brain.hparams.objective.balancer).__name__
    'MGDABalancer'
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {list(VARIANTS)}")
    margin, att_temperature, balancing, _ = VARIANTS[variant]
    hparams = {
        "objective": JointObjective(
            LogSoftmaxWrapper(AdditiveAngularMargin(0.2, 30)),
            None if margin is None else AngularSupConLoss(
                margin, 0.07, attention_temperature=att_temperature),
            make_balancer(balancing, contrastive_weight=0.0 if margin is None else 0.5),
        ),
        "augmentation": "none",
        "positive_views": 1,
        "lr_annealing": None,
        "error_stats": None,
        "train_logger": None,
    }
    brain = AngularContrastiveBrain(
        copy.deepcopy(modules),
        lambda params: torch.optim.Adam(params, lr=lr),
        hparams,
        run_opts={"device": device},
    )
    brain.on_fit_start()
    brain.modules.train()
    return brain


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_variants(brains, batch, warmup=3, repeats=10, device="cpu", progress=True):
    """Median milliseconds of ``fit_batch`` per variant, round-robin.

    Arguments
    ---------
    brains : dict
        Variant name to Brain.
    batch : PaddedBatch
        The fixed batch.
    warmup : int
        Untimed steps per variant first.
    repeats : int
        Timed rounds; in each every variant runs once, the first one rotating.
    device : str
        Synchronised around each step when CUDA.
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        Variant name to ``{"median": ms, "min": ms, "times": [ms, ...], "alpha": float}``.

    Example
    -------
    >>> mods = build_modules(16, 20, 8, 5)
    >>> brains = {v: build_brain(v, mods) for v in ("aam", "mgda_ub")}
    >>> res = time_variants(brains, make_batch(4, 2, 0.25, 5), 1, 2, progress=False)
    >>> sorted(res), len(res["aam"]["times"])
    (['aam', 'mgda_ub'], 2)
    """
    from tqdm import tqdm

    names = list(brains)
    for _ in range(warmup):
        for name in names:
            brains[name].fit_batch(batch)
    times = {name: [] for name in names}
    for rep in tqdm(range(repeats), desc="Timing rounds", disable=not progress):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            _sync(device)
            start = time.perf_counter()
            brains[name].fit_batch(batch)
            _sync(device)
            times[name].append(1000.0 * (time.perf_counter() - start))
    return {
        name: {
            "median": statistics.median(t),
            "min": min(t),
            "times": t,
            "alpha": brains[name].last_alpha,
        }
        for name, t in times.items()
    }


def format_table(results, baseline="aam"):
    """The results as a fixed-width text table.

    Arguments
    ---------
    results : dict
        From :func:`time_variants`.
    baseline : str
        Variant the ratios are relative to.

    Returns
    -------
    str

    Example
    -------
    >>> print(format_table({"aam": {"median": 10.0, "min": 9.0, "alpha": 1.0},
    ...                     "mgda_ub": {"median": 10.5, "min": 9.9, "alpha": 0.2}}))
    variant       median ms   min ms  ratio  alpha  description
    aam              10.000    9.000  1.000  1.000  AAM-softmax alone
    mgda_ub          10.500    9.900  1.050  0.200  + MGDA-UB (the paper's system)
    """
    base = results[baseline]["median"]
    lines = [f"{'variant':<12} {'median ms':>10} {'min ms':>8} {'ratio':>6} {'alpha':>6}  description"]
    for name, r in results.items():
        lines.append(
            f"{name:<12} {r['median']:>10.3f} {r['min']:>8.3f} {r['median'] / base:>6.3f} "
            f"{r['alpha']:>6.3f}  {VARIANTS[name][3]}"
        )
    return "\n".join(lines)


def format_paired(results, baseline="aam"):
    """Per-round ratios to ``baseline``: median and a 95 % interval for it.

    Every round times each variant once, back to back, so the ratio of two
    variants within a round is little affected by the load on the machine
    changing between rounds; the interval is distribution-free
    (:func:`bench_report.median_ci`).

    Arguments
    ---------
    results : dict
        From :func:`time_variants`.
    baseline : str
        The denominator.

    Returns
    -------
    str

    Example
    -------
    >>> print(format_paired({"aam": {"times": [10.0, 20.0]}, "mgda_ub": {"times": [11.0, 21.0]}}))
    paired by round, time / aam: median [95 % CI of the median]
      mgda_ub        1.075 [1.050, 1.100]
    """
    base = results[baseline]["times"]
    lines = [f"paired by round, time / {baseline}: median [95 % CI of the median]"]
    for name, r in results.items():
        if name == baseline:
            continue
        mid, low, high = median_ci([t / b for t, b in zip(r["times"], base)])
        lines.append(f"  {name:<12} {mid:>6.3f} [{low:.3f}, {high:.3f}]")
    return "\n".join(lines)


def main(argv=None):
    """Command line entry point.

    Arguments
    ---------
    argv : list of str, optional
        Arguments (default: ``sys.argv``).

    Returns
    -------
    float
        Median step time of ``mgda_ub`` over that of ``aam``.

    Example
    -------
    >>> r = main(["--quick", "--repeats", "2", "--no-progress"])  # doctest: +ELLIPSIS
    variant ...
    >>> r > 0
    True
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--channels", type=int, default=128, help="ECAPA-TDNN width C")
    parser.add_argument("--batch", type=int, default=32, help="utterances per batch (P x K)")
    parser.add_argument("--utts-per-speaker", type=int, default=4, help="K")
    parser.add_argument("--seconds", type=float, default=2.0, help="clip length")
    parser.add_argument("--n-mels", type=int, default=40)
    parser.add_argument("--emb-dim", type=int, default=96)
    parser.add_argument("--classes", type=int, default=1211,
                        help="classifier size (VoxCeleb1 dev: 1211 speakers)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                        help="variants to time; aam and mgda_ub are always included")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed round-robin rounds (default 20; 3 with --quick)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: stable medians on a shared machine; "
                        "0 = torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: C=16, batch 8 x 0.5 s, 1 warm-up, 3 rounds")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--output", default=None, metavar="FILE.md",
                        help="also write the printed output, under a header with the command, "
                        "commit, CPU, nproc, threads, load average and date (bench_report.py)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.quick:
        args.channels, args.batch, args.seconds, args.n_mels = 16, 8, 0.5, 20
        args.emb_dim, args.classes, args.utts_per_speaker = 16, 20, 2
        args.warmup = 1
    if args.repeats is None:
        args.repeats = 3 if args.quick else 20
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    with recorded(args.output, __file__, argv):
        return run(args)


def run(args):
    """Build the variants, time them, print the table; return the mgda_ub / aam ratio.

    Arguments
    ---------
    args : argparse.Namespace
        Parsed command line of :func:`main`.

    Returns
    -------
    float
    """
    variants = [v for v in VARIANTS if v in set(args.variants) | {"aam", "mgda_ub"}]

    modules = build_modules(args.channels, args.n_mels, args.emb_dim, args.classes, args.seed)
    batch = make_batch(args.batch, args.utts_per_speaker, args.seconds, args.classes, seed=args.seed)
    brains = {v: build_brain(v, modules, args.device) for v in variants}
    results = time_variants(
        brains, batch, args.warmup, args.repeats, args.device, progress=not args.no_progress
    )
    print(format_table(results))
    print(format_paired(results))
    params = sum(p.numel() for p in modules["embedding_model"].parameters())
    print(
        f"device {args.device} ({torch.get_num_threads()} threads), ECAPA-TDNN C={args.channels} "
        f"({params / 1e6:.2f} M params), {args.n_mels} mels, {args.emb_dim}-dim, batch "
        f"{args.batch} = {args.batch // args.utts_per_speaker} x {args.utts_per_speaker} "
        f"of {args.seconds:g} s, {args.classes} classes; one fit_batch (Adam step "
        f"included), median of {args.repeats} round-robin rounds after {args.warmup} warm-up"
    )
    ratio = results["mgda_ub"]["median"] / results["aam"]["median"]
    print(f"ratio {ratio:.3f}")
    return ratio


if __name__ == "__main__":
    main()

"""Speed of AM-SupCon + class-aware attention against pytorch-metric-learning's SupConLoss.

Times one forward + backward of

* ours: ``AngularSupConLoss`` with its class-aware attention: confidences
  from an ``[N, C]`` cosine matrix (the classifier's cosines, which training
  computes anyway for AAM-softmax, so they are made once outside the timed
  region), margin and weights on;
* pml: ``pytorch_metric_learning.losses.SupConLoss(temperature=tau)``;

on speaker-balanced batches (``--utts-per-speaker`` utterances per speaker).
Both variants run interleaved inside every repeat (their order alternating)
so that machine noise hits both alike; the table reports medians. The last
line is ``ratio <ours/pml>``, the geometric mean of the per-size ratios.

Usage::

    python benchmarks/loss_speed.py                 # CPU, N = 256 and 1024
    python benchmarks/loss_speed.py --device cuda
    python benchmarks/loss_speed.py --profile       # op breakdown at the largest N

Authors
 * sb-angcl contributors
"""

import argparse
import logging
import math
import statistics
import sys
import time

import torch
from bench_report import median_ci, recorded  # benchmarks/ is this script's folder

from sb_angcl.objective.losses import AngularSupConLoss

logger = logging.getLogger(__name__)


def make_batch(n, dim, n_classes, per_speaker, device, seed=0):
    """Random embeddings, speaker-balanced labels and classifier cosines.

    Arguments
    ---------
    n : int
        Batch size (a multiple of ``per_speaker``).
    dim : int
        Embedding size.
    n_classes : int
        Number of training speakers ``C`` of the classifier.
    per_speaker : int
        Utterances per speaker in the batch.
    device : str
        Torch device.
    seed : int
        Random seed.

    Returns
    -------
    emb : torch.Tensor
        ``[n, dim]`` leaf tensor requiring grad.
    labels : torch.Tensor
        ``[n]`` speaker indices in ``[0, n_classes)``.
    cosine : torch.Tensor
        ``[n, n_classes]`` detached classifier cosines.

    Example
    -------
    >>> emb, labels, cos = make_batch(8, 4, 10, 2, "cpu")
    >>> emb.shape, labels.shape, cos.shape
    (torch.Size([8, 4]), torch.Size([8]), torch.Size([8, 10]))
    """
    if n % per_speaker:
        raise ValueError(
            f"batch size {n} is not a multiple of {per_speaker} utterances per speaker"
        )
    if n // per_speaker > n_classes:
        raise ValueError(
            f"{n // per_speaker} speakers in a batch but only {n_classes} classes"
        )
    gen = torch.Generator().manual_seed(seed)
    speakers = torch.randperm(n_classes, generator=gen)[: n // per_speaker]
    labels = speakers.repeat_interleave(per_speaker)
    emb = torch.randn(n, dim, generator=gen)
    weight = torch.randn(n_classes, dim, generator=gen)
    cosine = (
        torch.nn.functional.normalize(emb, dim=1)
        @ torch.nn.functional.normalize(weight, dim=1).t()
    )
    emb = emb.to(device).requires_grad_(True)
    return emb, labels.to(device), cosine.to(device)


def build_steps(args):
    """The two timed callables (forward + backward), keyed by name.

    Arguments
    ---------
    args : argparse.Namespace
        Parsed command line.

    Returns
    -------
    dict
        ``{"ours": fn, "pml": fn}``; each ``fn(emb, labels, cosine)`` runs one
        forward and backward and returns the loss value.

    Example
    -------
    >>> ns = argparse.Namespace(margin=0.2, temperature=0.07, attention_temperature=1.0)
    >>> steps = build_steps(ns)
    >>> emb, labels, cos = make_batch(8, 4, 10, 2, "cpu")
    >>> loss = steps["ours"](emb, labels, cos)
    >>> emb.grad.shape
    torch.Size([8, 4])
    """
    from pytorch_metric_learning.losses import SupConLoss

    ours_loss = AngularSupConLoss(
        margin=args.margin, temperature=args.temperature,
        attention_temperature=args.attention_temperature,
    )
    pml_loss = SupConLoss(temperature=args.temperature)

    def ours(emb, labels, cosine):
        emb.grad = None
        loss = ours_loss(emb, labels, ours_loss.confidence(cosine, labels))
        loss.backward()
        return loss.detach()

    def pml(emb, labels, cosine):
        emb.grad = None
        loss = pml_loss(emb, labels)
        loss.backward()
        return loss.detach()

    return {"ours": ours, "pml": pml}


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_sizes(args, steps):
    """Median forward + backward milliseconds per variant and size.

    Arguments
    ---------
    args : argparse.Namespace
        Parsed command line.
    steps : dict
        From :func:`build_steps`.

    Returns
    -------
    dict
        ``{n: {"ours": ms, "pml": ms, "paired": (median, low, high)}}``: the
        medians, and the median of the per-repeat ratios ours / pml (both run
        back to back) with a distribution-free 95 % interval.

    Example
    -------
    >>> ns = argparse.Namespace(margin=0.2, temperature=0.07, attention_temperature=1.0,
    ...     sizes=[8], dim=4, classes=10, utts_per_speaker=2, device="cpu", warmup=1, repeats=3)
    >>> sorted(time_sizes(ns, build_steps(ns))[8])
    ['ours', 'paired', 'pml']
    """
    results = {}
    names = list(steps)
    for n in args.sizes:
        batch = make_batch(
            n, args.dim, args.classes, args.utts_per_speaker, args.device
        )
        for _ in range(args.warmup):
            for name in names:
                steps[name](*batch)
        times = {name: [] for name in names}
        for rep in range(args.repeats):
            order = names if rep % 2 == 0 else names[::-1]
            for name in order:
                _sync(args.device)
                start = time.perf_counter()
                steps[name](*batch)
                _sync(args.device)
                times[name].append(1000.0 * (time.perf_counter() - start))
        results[n] = {name: statistics.median(t) for name, t in times.items()}
        results[n]["paired"] = median_ci([a / b for a, b in zip(times["ours"], times["pml"])])
    return results


def profile(args, steps, n):
    """Print torch.profiler's op table for both variants at batch size ``n``.

    Arguments
    ---------
    args : argparse.Namespace
        Parsed command line.
    steps : dict
        From :func:`build_steps`.
    n : int
        Batch size.
    """
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU]
    sort_key = "self_cpu_time_total"
    if args.device.startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
        sort_key = "self_cuda_time_total"
    batch = make_batch(n, args.dim, args.classes, args.utts_per_speaker, args.device)
    for name, step in steps.items():
        for _ in range(args.warmup):
            step(*batch)
        with torch_profile(activities=activities) as prof:
            for _ in range(args.repeats):
                step(*batch)
            _sync(args.device)
        print(f"\n--- {name}, N={n}, {args.repeats} steps ---")
        print(prof.key_averages().table(sort_by=sort_key, row_limit=15))


def main(argv=None):
    """Command line entry point.

    Arguments
    ---------
    argv : list of str, optional
        Arguments (default: ``sys.argv``).

    Returns
    -------
    float
        Geometric mean of the ours/pml time ratios.

    Example
    -------
    >>> r = main(["--sizes", "8", "--dim", "4", "--classes", "10", "--repeats", "2",
    ...           "--warmup", "1", "--utts-per-speaker", "2"])  # doctest: +ELLIPSIS
    N ...
    >>> r > 0
    True
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument(
        "--classes", type=int, default=1211, help="classifier classes C"
    )
    parser.add_argument("--utts-per-speaker", type=int, default=4)
    parser.add_argument("--margin", type=float, default=0.2)
    parser.add_argument("--temperature", type=float, default=0.07)
    parser.add_argument("--attention-temperature", type=float, default=1.0 / 30,
                        help="T_att (default 1/30: the recipes' 1/s; the cost does not depend on it)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--profile", action="store_true", help="op breakdown at the largest N"
    )
    parser.add_argument("--output", default=None, metavar="FILE.md",
                        help="also write the printed output, under a header with the command, "
                        "commit, CPU, nproc, threads, load average and date (bench_report.py)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with recorded(args.output, __file__, argv):
        return run(args)


def run(args):
    """Time both losses at every size, print the table; return the geometric-mean ratio.

    Arguments
    ---------
    args : argparse.Namespace
        Parsed command line of :func:`main`.

    Returns
    -------
    float
    """
    steps = build_steps(args)
    results = time_sizes(args, steps)
    print(f"{'N':>6} {'ours ms':>10} {'pml ms':>10} {'ratio':>7}  paired median [95 % CI]")
    ratios = []
    for n, r in results.items():
        ratio = r["ours"] / r["pml"]
        ratios.append(ratio)
        mid, low, high = r["paired"]
        print(f"{n:>6} {r['ours']:>10.3f} {r['pml']:>10.3f} {ratio:>7.3f}  "
              f"{mid:.3f} [{low:.3f}, {high:.3f}]")
    geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print(
        f"device {args.device}, D={args.dim}, C={args.classes}, "
        f"{args.utts_per_speaker} utts/speaker, median of {args.repeats}; paired = per-repeat "
        "ours/pml (run back to back); ratio = geometric mean over sizes"
    )
    if args.profile:
        profile(args, steps, max(args.sizes))
    print(f"ratio {geo:.3f}")
    return geo


if __name__ == "__main__":
    main()

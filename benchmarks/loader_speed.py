"""Training-loader throughput per DataLoader worker, ours and upstream SpeechBrain's.

Both loaders read the same VoxCeleb1-layout corpus of real WAV files
(``--corpus``, with ``meta/veri_test2.txt``) and deliver random crops of the
YAML's ``sentence_len`` (3 s):

* **ours**: ``recipes/VoxCeleb/SpeakerRec/train.py``'s ``prepare`` and
  ``dataio_prep`` (the train dataset with its cropping pipeline, and the
  P x K sampler; YAML ``train_ecapa_angcl.yaml``, P = ``--batch`` / K),
  batches from the sampler's epoch plans;
* **upstream**: SpeechBrain's ``recipes/VoxCeleb/SpeakerRec/train_speaker_embeddings.py``
  ``dataio_prep``, imported from an upstream checkout (``--upstream DIR``),
  on the manifests of that checkout's own ``voxceleb_prepare.py`` called as
  its train script calls it (3 s chunks of the files longer than 3 s), with its
  YAML's settings (``train_ecapa_tdnn.yaml``: ``random_chunk``), batches of
  ``--batch`` rows in random order.

Each loader is SpeechBrain's ``make_dataloader`` (``PaddedBatch`` collation) as
the Brains make it for training, over a list of ``--batches`` batches
(successive epochs' plans, so that a measurement is not cut short by the
small corpus), with ``num_workers`` from ``--workers``. The two pipelines
alternate within each of ``--rounds`` rounds. The rate counts the utterances
delivered after the first ``2 w + 1`` batches (the workers' start and their
prefetch), per second of wall time; per worker is that rate over ``w``
(``w = 0``: the main process alone). The last table gives the workers one
GPU needs to keep up with a training step of ``B`` crops taking ``t`` seconds,
``ceil(B / t / rate per worker)``, for the step times of ``--step-file``
(the output of ``step_overhead.py``, e.g. ``gpu_check.sh``'s on a GPU) or
``--step-ms`` (assumed times, labelled as such).

The last line is ``ratio <ours / upstream, utterances per second>``: the
median of the per-round ratios at the first worker count of ``--workers``
above 0 (at 0 if there is none); 1 without ``--upstream``.

Example::

    git clone https://github.com/speechbrain/speechbrain /tmp/speechbrain
    python benchmarks/loader_speed.py --corpus /path/to/vox --upstream /tmp/speechbrain \\
        --output benchmarks/results/loader_speed.md
    python benchmarks/loader_speed.py --corpus DIR --quick     # ours only, seconds

Authors
 * sb-angcl contributors
"""

import argparse
import contextlib
import importlib.util
import logging
import math
import os
import re
import statistics
import sys
import tempfile
import time

import speechbrain as sb
import torch
from ablation import load_recipe_module  # benchmarks/ is this script's folder
from bench_report import median_ci, recorded

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_HPARAMS = os.path.join(
    ROOT, "recipes", "VoxCeleb", "SpeakerRec", "hparams", "train_ecapa_angcl.yaml"
)
UPSTREAM_RECIPE = os.path.join("recipes", "VoxCeleb", "SpeakerRec")
UPSTREAM_HPARAMS = os.path.join(UPSTREAM_RECIPE, "hparams", "train_ecapa_tdnn.yaml")


def _load_file_module(name, path):
    """Imports ``path`` as module ``name`` (recipes are not packages).

    The module is registered in ``sys.modules`` as an imported script is:
    SpeechBrain's lazy modules look up the module of the code that uses them
    (``inspect.getframeinfo``), which scans every loaded module, tens of ms,
    when that code's module is not registered.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: is --upstream an upstream SpeechBrain checkout?")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def ours(corpus, work_dir, batch, hparams_file=DEFAULT_HPARAMS, overrides=None):
    """The recipe's training dataset and P x K sampler on ``corpus``.

    Arguments
    ---------
    corpus : str
        VoxCeleb1-layout root (``wav/``, ``meta/veri_test2.txt``), or several
        roots, comma-separated (the trial list in the first).
    work_dir : str
        Output folder of the run (manifests in ``save/``).
    batch : int
        Crops per batch: ``speakers_per_batch = batch / utterances_per_speaker``.
    overrides : dict, optional
        Further YAML settings (e.g. ``sentence_len``).

    Returns
    -------
    dataset : DynamicItemDataset
        ``dataio_prep``'s training dataset.
    sampler : SpeakerBalancedBatchSampler
        ``dataio_prep``'s batch sampler.
    hparams : dict
        The settings used.
    """
    from speechbrain.utils.epoch_loop import EpochCounter

    from sb_angcl.hyperparams import plain_hparams

    module = load_recipe_module(hparams_file)
    first_root = corpus.split(",")[0]
    settings = {"data_folder": corpus, "output_folder": work_dir,
                "verification_file": os.path.join(first_root, "meta", "veri_test2.txt"),
                **(overrides or {})}
    hparams = plain_hparams(hparams_file, settings)
    if batch % hparams["utterances_per_speaker"]:
        raise ValueError(f"--batch {batch} is not a multiple of utterances_per_speaker "
                         f"{hparams['utterances_per_speaker']}")
    hparams["speakers_per_batch"] = batch // hparams["utterances_per_speaker"]
    module.prepare(hparams)
    hparams["epoch_counter"] = EpochCounter(hparams["number_of_epochs"])
    train, _, _, sampler = module.dataio_prep(hparams)
    return train, sampler, hparams


def upstream(corpus, work_dir, checkout):
    """Upstream SpeechBrain's training dataset on ``corpus``, made by its own code.

    Arguments
    ---------
    corpus : str
        VoxCeleb1-layout root (``wav/``, ``meta/veri_test2.txt``).
    work_dir : str
        Output folder (its manifests in ``save/``).
    checkout : str
        An upstream SpeechBrain checkout.

    Returns
    -------
    dataset : DynamicItemDataset
        ``train_speaker_embeddings.dataio_prep``'s training dataset.
    hparams : dict
        Its YAML's plain settings.
    """
    from sb_angcl.hyperparams import plain_hparams

    recipe = os.path.join(checkout, UPSTREAM_RECIPE)
    prep = _load_file_module("upstream_voxceleb_prepare", os.path.join(recipe, "voxceleb_prepare.py"))
    script = _load_file_module("upstream_train_speaker_embeddings",
                               os.path.join(recipe, "train_speaker_embeddings.py"))
    hparams = plain_hparams(os.path.join(checkout, UPSTREAM_HPARAMS),
                            {"data_folder": corpus, "output_folder": work_dir})
    # As the upstream train script calls it (its trial list is the corpus's own); it
    # prints to stdout, which here is the report.
    with contextlib.redirect_stdout(sys.stderr):
        prep.prepare_voxceleb(
            data_folder=hparams["data_folder"], save_folder=hparams["save_folder"],
            verification_pairs_file=os.path.join(corpus, "meta", "veri_test2.txt"),
            splits=["train", "dev"], split_ratio=hparams["split_ratio"],
            seg_dur=hparams["sentence_len"], skip_prep=False,
        )
    train, _, _ = script.dataio_prep(hparams)
    return train, hparams


def plan_batches(sampler, count):
    """``count`` batches: the sampler's plans of epochs 1, 2, ... one after the other."""
    batches, epoch = [], 1
    while len(batches) < count:
        sampler.set_epoch(epoch)
        batches.extend(list(sampler))
        epoch += 1
    return batches[:count]


def shuffled_batches(size, batch, count, seed=0):
    """``count`` batches of ``batch`` indices in ``range(size)``, a new permutation per pass."""
    generator = torch.Generator().manual_seed(seed)
    batches, order = [], []
    while len(batches) < count:
        if len(order) < batch:
            order += torch.randperm(size, generator=generator).tolist()
        batches.append(order[:batch])
        order = order[batch:]
    return batches


def time_loader(dataset, batches, workers):
    """Iterates SpeechBrain's training loader over ``batches``; returns (utt/s, first batch s).

    The rate counts the crops of the batches after the first ``2 w + 1``,
    over the time from that batch's arrival to the last one's.
    """
    loader = sb.dataio.dataloader.make_dataloader(dataset, batch_sampler=batches,
                                                  num_workers=workers)
    skip = 2 * workers + 1
    if len(batches) <= skip + 1:
        raise ValueError(f"--batches must exceed {skip + 1} for {workers} workers")
    start = time.perf_counter()
    arrivals, sizes = [], []
    for item in loader:
        arrivals.append(time.perf_counter())
        sizes.append(item.sig.data.shape[0])
    return sum(sizes[skip + 1:]) / (arrivals[-1] - arrivals[skip]), arrivals[0] - start


def read_step_file(path):
    """Step times from a ``step_overhead.py`` output: [(label, batch, seconds), ...].

    Reads the median ms of every variant row and the batch size from its
    ``device ...`` line.

    Example
    -------
    >>> p = os.path.join(tempfile.mkdtemp(), "s.txt")
    >>> _ = open(p, "w").write(
    ...     "variant median ms min ms ratio\\naam 120.5 110.0 1.000 1.000 AAM\\n"
    ...     "device cuda (0 threads), ECAPA-TDNN C=1024 (x), batch 128 = 32 x 4 of 2 s\\n")
    >>> read_step_file(p)
    [('aam, C=1024, cuda', 128, 0.1205)]
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    device = re.search(r"^device (\S+).*?C=(\d+).*?batch (\d+)", text, re.M)
    if device is None:
        raise ValueError(f"{path} is not a step_overhead.py output (no 'device ... batch N' line)")
    rows = re.findall(r"^(aam|supcon|amsupcon_caa|mgda_ub|mgda)\s+([\d.]+)\s", text, re.M)
    return [(f"{name}, C={device.group(2)}, {device.group(1)}", int(device.group(3)),
             float(ms) / 1000) for name, ms in rows]


def workers_needed(batch, step_seconds, per_worker):
    """Workers that deliver ``batch`` crops per ``step_seconds`` at ``per_worker`` crops/s each.

    Example
    -------
    >>> workers_needed(256, 0.25, 400.0)
    3
    """
    return max(1, math.ceil(batch / step_seconds / per_worker))


def main(argv=None):
    """Command line entry point; returns ours / upstream at 1 worker.

    Arguments
    ---------
    argv : list of str, optional
        Arguments.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", required=True,
                        help="VoxCeleb1-layout corpus of real WAV files (wav/, meta/veri_test2.txt)")
    parser.add_argument("--upstream", default=None,
                        help="an upstream SpeechBrain checkout (without: ours alone)")
    parser.add_argument("--hparams", default=DEFAULT_HPARAMS)
    parser.add_argument("--batch", type=int, default=64, help="crops per batch (both loaders)")
    parser.add_argument("--batches", type=int, default=60, help="batches per measurement")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--step-file", nargs="*", default=[],
                        help="step_overhead.py outputs to size the workers for")
    parser.add_argument("--step-ms", type=float, nargs="*", default=[100, 200, 400, 800],
                        help="assumed step times (ms) of --step-batch crops, when no step file")
    parser.add_argument("--step-batch", type=int, nargs="*", default=[128, 256])
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--quick", action="store_true",
                        help="1 round, 8 batches of 16, workers 0 and 1")
    parser.add_argument("--output", default=None, metavar="FILE.md",
                        help="also write the printed output, under a header with the command, "
                        "commit, CPU, nproc, threads, load average and date (bench_report.py)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.batches, args.batch, args.workers = 1, 8, 16, [0, 1]
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    with recorded(args.output, __file__, argv):
        return run(args)


def run(args):
    """Builds both datasets, times their loaders round by round, prints the tables."""
    work = args.work_dir or tempfile.mkdtemp(prefix="sb_angcl_loader_")
    train, sampler, hparams = ours(args.corpus, os.path.join(work, "ours"), args.batch, args.hparams)
    pipelines = {"ours": (train, plan_batches(sampler, args.batches))}
    crop = hparams["sentence_len"]
    if args.upstream:
        up_train, up_hparams = upstream(args.corpus, os.path.join(work, "upstream"), args.upstream)
        if up_hparams["sentence_len"] != crop:
            raise ValueError(f"crops differ: ours {crop} s, upstream {up_hparams['sentence_len']} s")
        pipelines["upstream"] = (up_train, shuffled_batches(len(up_train), args.batch, args.batches))
    rates = {(name, w): [] for name in pipelines for w in args.workers}
    firsts = {(name, w): [] for name in pipelines for w in args.workers}
    names = list(pipelines)
    for r in range(args.rounds):
        for w in args.workers:
            for name in names if r % 2 == 0 else names[::-1]:
                rate, first = time_loader(*pipelines[name], w)
                rates[name, w].append(rate)
                firsts[name, w].append(first)
        print(f"# round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    print(f"Corpus: {os.path.basename(os.path.normpath(args.corpus))}, "
          + "; ".join(f"{name} {len(data)} training rows" for name, (data, _) in pipelines.items())
          + f"; crops of {crop} s at {hparams['sample_rate']} Hz; {args.batches} batches of "
          f"{args.batch} per measurement, {args.rounds} rounds; torch threads 1 per process")
    print()
    print("| loader | workers | utterances/s (median) | per worker | first batch s | ours / upstream, per round [95 % CI] |")
    print("|---|---|---|---|---|---|")
    for w in args.workers:
        for name in names:
            rate = statistics.median(rates[name, w])
            paired = ""
            if name == "ours" and "upstream" in pipelines:
                mid, lo, hi = median_ci([a / b for a, b in zip(rates["ours", w], rates["upstream", w])])
                paired = f"{mid:.2f} [{lo:.2f}, {hi:.2f}]"
            print(f"| {name} | {w} | {rate:.0f} | {rate / max(w, 1):.0f} | "
                  f"{statistics.median(firsts[name, w]):.2f} | {paired} |")
    reference = next((w for w in args.workers if w > 0), args.workers[0])
    per_worker = statistics.median(rates["ours", reference]) / max(reference, 1)
    print()
    steps = [s for path in args.step_file for s in read_step_file(path)]
    if steps:
        print(f"Workers one GPU needs (ours at {per_worker:.0f} utterances/s per worker, "
              f"{reference} worker(s); step times from {', '.join(args.step_file)}):")
    else:
        steps = [(f"assumed {ms:g} ms (not measured)", b, ms / 1000)
                 for b in args.step_batch for ms in args.step_ms]
        print(f"Workers one GPU needs (ours at {per_worker:.0f} utterances/s per worker, "
              f"{reference} worker(s)); GPU step times NOT measured here, assumed:")
    print()
    print("| step | crops per step | step s | crops/s needed | workers |")
    print("|---|---|---|---|---|")
    for label, batch, seconds in steps:
        print(f"| {label} | {batch} | {seconds:.3f} | {batch / seconds:.0f} | "
              f"{workers_needed(batch, seconds, per_worker)} |")
    ratio = 1.0
    if "upstream" in pipelines:
        ratio = median_ci([a / b for a, b in zip(rates["ours", reference],
                                                 rates["upstream", reference])])[0]
    print()
    print(f"ratio {ratio:.3f}")
    return ratio


if __name__ == "__main__":
    main()

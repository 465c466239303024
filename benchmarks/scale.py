"""Preparation, manifests, label encoder and epoch plan at VoxCeleb2-dev size.

Writes a layout shaped like VoxCeleb2 dev (5,994 speakers, 1,092,009
utterances in about 145,600 video folders, ~24 per speaker) next to a
VoxCeleb1-test-shaped root (40 speakers ``id10270``-``id10309``, 4,874
utterances, a 37,611-trial list in ``veri_test2.txt`` format with real-looking
IDs: the real list is not needed offline), at each fraction of ``--fractions``
of the dev size (the test root keeps its full size). Every file is a hard link
to one of a few tiny WAVs (0.6-1.2 s), so the layout costs directory entries,
not audio. Then, each in a fresh subprocess (so that its peak RSS is its own),
the recipe's own steps run on it as ``recipes/VoxCeleb/SpeakerRec/train.py``
runs them, with the YAML's settings (``train_ecapa_angcl.yaml``: 98/2 split,
P x K = 64 x 4, positives across sessions):

* ``import``: importing the recipe's ``train.py`` (the baseline of every stage);
* ``prepare``: its ``prepare(hparams)`` (``prepare_voxceleb``: scan, probe every
  file, split, write the manifests), then ``prepare again`` (reusing them);
* ``label encoder``: loading ``train.csv`` and fitting the speaker label
  encoder, as ``prepare_and_size`` does before the YAML is loaded;
* ``dataio_prep``: the whole of ``dataio_prep`` (``speaker_datasets``: train
  and dev manifests, label encoder, pipelines, timed on the way; then the
  P x K sampler), then in the same process the sampler's construction alone,
  one epoch's plan iterated on 1 rank, and a sampler for rank 0 of 8 built
  and iterated.

The table gives wall time and peak RSS per stage and size, and the growth
exponent of each: the least-squares slope of log(time) (resp. log(RSS above
the ``import`` baseline)) against log(utterances), 1 for linear growth. The
last line is ``ratio <largest time exponent of the stages>``.

Example::

    nice -n 10 python benchmarks/scale.py --output benchmarks/results/scale.md
    python benchmarks/scale.py --quick      # a tiny layout, seconds

Authors
 * sb-angcl contributors
"""

import argparse
import json
import logging
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import wave

import numpy as np
from ablation import load_recipe_module  # benchmarks/ is this script's folder
from bench_report import recorded

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_HPARAMS = os.path.join(
    ROOT, "recipes", "VoxCeleb", "SpeakerRec", "hparams", "train_ecapa_angcl.yaml"
)
#: VoxCeleb2 dev: speakers, videos, utterances.
DEV = {"speakers": 5994, "videos": 145569, "utterances": 1092009}
#: VoxCeleb1 test (the speakers of veri_test2.txt): speakers, videos, utterances, trials.
TEST = {"speakers": 40, "videos": 677, "utterances": 4874, "trials": 37611, "first_id": 10270}
#: Characters of YouTube video IDs.
VIDEO_CHARS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
#: Hard links per source file (ext4 allows 65,000 per inode).
LINKS_PER_SOURCE = 60000
STAGES = ("import", "prepare", "prepare again", "label encoder", "dataio_prep")
RESULT_TAG = "SCALE_RESULT "


# ------------------------------------------------------------------ the layout
def _spread(rng, total, bins, sigma):
    """``bins`` positive counts summing to ``total``, lognormally uneven."""
    if total < bins:
        raise ValueError(f"cannot spread {total} items over {bins} bins with >= 1 each")
    weights = rng.lognormal(0.0, sigma, bins)
    return 1 + rng.multinomial(total - bins, weights / weights.sum())


def _video_ids(rng, count):
    """``count`` distinct 11-character video IDs."""
    ids = set()
    while len(ids) < count:
        chars = VIDEO_CHARS[rng.integers(0, len(VIDEO_CHARS), (count - len(ids), 11))]
        ids.update("".join(row) for row in chars)
    return sorted(ids)[:count]


def _write_sources(folder, count, rng, sample_rate=16000):
    """``count`` tiny 16-bit mono WAVs of 0.6 to 1.2 s to link to."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, seconds in enumerate(np.linspace(0.6, 1.2, count)):
        path = os.path.join(folder, f"source{i:03d}.wav")
        samples = (rng.standard_normal(int(seconds * sample_rate)) * 1000).astype("<i2")
        with wave.open(path, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(sample_rate)
            out.writeframes(samples.tobytes())
        paths.append(path)
    return paths


def _link_tree(root, speakers, videos_per_speaker, utts_per_video, sources, rng):
    """Hard-links ``root/wav/<spk>/<video>/<NNNNN>.wav``; returns the paths per speaker."""
    files, video_at, link = {}, 0, 0
    for spk, num_videos in zip(speakers, videos_per_speaker):
        files[spk] = []
        for video in _video_ids(rng, int(num_videos)):
            folder = os.path.join(root, "wav", spk, video)
            os.makedirs(folder)
            for j in range(int(utts_per_video[video_at])):
                name = f"{j + 1:05d}.wav"
                os.link(sources[link % len(sources)], os.path.join(folder, name))
                files[spk].append(f"{spk}/{video}/{name}")
                link += 1
            video_at += 1
    return files


def write_layout(work_dir, fraction, test_fraction=1.0, seed=0):
    """A VoxCeleb2-dev-shaped root and a VoxCeleb1-test-shaped root of hard links.

    Arguments
    ---------
    work_dir : str
        Created; holds ``vox1_test/`` (with ``meta/veri_test2.txt``),
        ``vox2_dev/`` and ``sources/``.
    fraction : float
        Size of the dev root relative to VoxCeleb2 dev (:data:`DEV`).
    test_fraction : float
        Size of the test root and trial list relative to :data:`TEST`.
    seed : int
        Seed of the IDs and of the counts.

    Returns
    -------
    dict
        ``data_folder`` (the two roots, comma-separated, test root first),
        ``verification_file``, and the counts written.

    Example
    -------
    >>> out = write_layout(tempfile.mkdtemp(), 0.002, test_fraction=0.1)
    >>> out["speakers"], out["utterances"], out["test_utterances"], out["trials"]
    (12, 2184, 487, 3761)
    >>> sorted(os.listdir(out["data_folder"].split(",")[1] + "/wav"))[:2]
    ['id00003', 'id00044']
    """
    rng = np.random.default_rng(seed)
    dev = {k: max(1, round(v * fraction)) for k, v in DEV.items()}
    test = {k: max(2, round(v * test_fraction)) for k, v in TEST.items() if k != "first_id"}
    total = dev["utterances"] + test["utterances"]
    sources = _write_sources(
        os.path.join(work_dir, "sources"), max(32, -(-total // LINKS_PER_SOURCE)), rng
    )
    # VoxCeleb2 dev: speakers among id00001-id09999, ~24 videos each.
    numbers = np.sort(rng.choice(9999, dev["speakers"], replace=False) + 1)
    speakers = [f"id{n:05d}" for n in numbers]
    videos = _spread(rng, max(dev["videos"], dev["speakers"]), dev["speakers"], 0.6)
    utts = _spread(rng, max(dev["utterances"], int(videos.sum())), int(videos.sum()), 0.8)
    dev_root = os.path.join(work_dir, "vox2_dev")
    _link_tree(dev_root, speakers, videos, utts, sources, rng)
    # VoxCeleb1 test: id10270 on, and its trial list.
    test_speakers = [f"id{TEST['first_id'] + i:05d}" for i in range(test["speakers"])]
    tvideos = _spread(rng, max(test["videos"], test["speakers"]), test["speakers"], 0.3)
    tutts = _spread(rng, max(test["utterances"], int(tvideos.sum())), int(tvideos.sum()), 0.6)
    test_root = os.path.join(work_dir, "vox1_test")
    files = _link_tree(test_root, test_speakers, tvideos, tutts, sources, rng)
    trial_file = os.path.join(test_root, "meta", "veri_test2.txt")
    os.makedirs(os.path.dirname(trial_file))
    with open(trial_file, "w", encoding="utf-8") as out:
        for i in range(test["trials"]):
            spk = test_speakers[rng.integers(len(test_speakers))]
            enrol = files[spk][rng.integers(len(files[spk]))]
            target = i % 2 == 0
            if not target:
                others = [s for s in test_speakers if s != spk]
                spk = others[rng.integers(len(others))]
            test_file = files[spk][rng.integers(len(files[spk]))]
            out.write(f"{int(target)} {enrol} {test_file}\n")
    return {
        "data_folder": f"{test_root},{dev_root}",
        "verification_file": trial_file,
        "speakers": dev["speakers"],
        "videos": int(videos.sum()),
        "utterances": int(utts.sum()),
        "test_utterances": int(tutts.sum()),
        "trials": test["trials"],
    }


# ------------------------------------------------------------ stages (children)
def recipe_settings(hparams_file, data_folder, verification_file, output_folder, overrides=None):
    """The YAML's plain settings for a run on the layout, as ``prepare(hparams)`` gets them.

    Returns
    -------
    dict
        :func:`sb_angcl.hyperparams.plain_hparams` of ``hparams_file`` with
        ``data_folder``, ``verification_file`` and ``output_folder`` set.
    """
    from sb_angcl.hyperparams import plain_hparams

    settings = {"data_folder": data_folder, "verification_file": verification_file,
                "output_folder": output_folder, **(overrides or {})}
    return plain_hparams(hparams_file, settings)


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - start


def run_stage(stage, hparams_file, settings):
    """Runs one stage in this process; returns its timings (seconds) and counts.

    Arguments
    ---------
    stage : str
        One of :data:`STAGES`.
    hparams_file : str
        The recipe YAML.
    settings : dict
        From :func:`recipe_settings`.

    Returns
    -------
    dict
        ``seconds`` (the stage's wall time) and stage-specific entries.
    """
    module, seconds = _timed(load_recipe_module, hparams_file)
    if stage == "import":
        return {"seconds": seconds}
    from sb_angcl.data.dataio import build_label_encoder, load_manifest, speaker_datasets
    from sb_angcl.data.sampler import SpeakerBalancedBatchSampler

    save = settings["save_folder"]
    if stage in ("prepare", "prepare again"):
        _, seconds = _timed(module.prepare, settings)
        with open(os.path.join(save, "prepare_summary.json"), encoding="utf-8") as f:
            summary = json.load(f)
        return {"seconds": seconds, "train_rows": summary["splits"]["train"]["utterances"],
                "csv_mb": os.path.getsize(settings["train_annotation"]) / 2**20}
    if stage == "label encoder":
        data, load_s = _timed(load_manifest, settings["train_annotation"], settings["data_folder"])
        path = os.path.join(save, "label_encoder.txt")
        if os.path.exists(path):
            os.remove(path)
        encoder, fit_s = _timed(build_label_encoder, data, path)
        _, reload_s = _timed(build_label_encoder, data, path)
        return {"seconds": load_s + fit_s, "load_s": load_s, "fit_s": fit_s,
                "reload_s": reload_s, "speakers": len(encoder)}
    from speechbrain.utils.epoch_loop import EpochCounter

    if stage != "dataio_prep":
        raise ValueError(f"unknown stage {stage!r}; one of {STAGES}")
    hparams = {**settings, "epoch_counter": EpochCounter(settings["number_of_epochs"])}
    # train.py's dataio_prep as it is, its call of speaker_datasets timed on the way.
    manifests = {}

    def timed_speaker_datasets(*args, **kwargs):
        value, manifests["seconds"] = _timed(speaker_datasets, *args, **kwargs)
        return value

    module.speaker_datasets = timed_speaker_datasets
    (train, _, _, sampler), seconds = _timed(module.dataio_prep, hparams)
    options = {"key": "spk_id", "speakers_per_batch": settings["speakers_per_batch"],
               "utterances_per_speaker": settings["utterances_per_speaker"],
               "seed": settings["seed"],
               "positives_across_sessions": settings["positives_across_sessions"]}
    _, build_s = _timed(SpeakerBalancedBatchSampler.from_dataset, train, **options)
    sampler.set_epoch(1)
    batches, epoch_s = _timed(list, sampler)
    rank0, build8_s = _timed(SpeakerBalancedBatchSampler.from_dataset, train,
                             num_replicas=8, rank=0, **options)
    rank0.set_epoch(1)
    batches8, epoch8_s = _timed(list, rank0)
    return {"seconds": seconds, "manifests_s": manifests["seconds"], "sampler_s": build_s,
            "epoch_s": epoch_s, "batches": len(batches), "sampler8_s": build8_s,
            "epoch8_s": epoch8_s, "batches8": len(batches8), "train_rows": len(train),
            "dropped_groups": sampler.num_dropped_groups}


def child_main(args):
    """Entry of a stage subprocess: runs it, prints one ``SCALE_RESULT {json}`` line."""
    logging.basicConfig(level=logging.WARNING)
    settings = json.loads(args.settings)
    result = run_stage(args.stage, args.hparams, settings)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(RESULT_TAG + json.dumps(result))


def measure(stage, hparams_file, settings, log_path, in_process=False):
    """Runs :func:`run_stage` in a fresh subprocess (or here); returns its result dict."""
    if in_process:
        result = run_stage(stage, hparams_file, settings)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return result
    cmd = [sys.executable, os.path.abspath(__file__), "--stage", stage,
           "--hparams", hparams_file, "--settings", json.dumps(settings)]
    env = dict(os.environ, TQDM_DISABLE="1")
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"== {stage}\n")
        log.flush()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        with open(log_path, encoding="utf-8") as log:
            tail = log.read()[-3000:]
        raise RuntimeError(f"stage {stage!r} failed (exit {proc.returncode}); log {log_path}:\n{tail}")
    return json.loads(lines[-1][len(RESULT_TAG):])


# ------------------------------------------------------------------- the table
def growth_exponent(sizes, values):
    """Least-squares slope of log(values) against log(sizes).

    Example
    -------
    >>> round(growth_exponent([1, 2, 8], [3, 6, 24]), 6)
    1.0
    >>> round(growth_exponent([1, 2, 4], [1, 4, 16]), 6)
    2.0
    """
    x, y = np.log(np.asarray(sizes, float)), np.log(np.asarray(values, float))
    if len(x) < 2 or np.ptp(x) == 0 or not np.all(np.isfinite(y)):
        return float("nan")
    return float(np.polyfit(x, y, 1)[0])


#: Rows of the table: (label, stage, result key, in the growth exponent's max).
ROWS = [
    ("import recipe train.py (baseline)", "import", "seconds", False),
    ("prepare_voxceleb (scan, probe, split, write)", "prepare", "seconds", True),
    ("prepare_voxceleb again (manifests reused)", "prepare again", "seconds", False),
    ("train.csv loaded + label encoder fitted", "label encoder", "seconds", True),
    ("  of which: label encoder fitted", "label encoder", "fit_s", True),
    ("dataio_prep (manifests + P x K sampler)", "dataio_prep", "seconds", True),
    ("  of which: speaker_datasets (manifests, label encoder, pipelines)", "dataio_prep",
     "manifests_s", True),
    ("  P x K sampler built (1 rank)", "dataio_prep", "sampler_s", True),
    ("  one epoch's plan iterated (1 rank)", "dataio_prep", "epoch_s", True),
    ("  sampler built, rank 0 of 8", "dataio_prep", "sampler8_s", True),
    ("  one epoch's plan iterated, rank 0 of 8", "dataio_prep", "epoch8_s", True),
]
RSS_ROWS = ["import", "prepare", "label encoder", "dataio_prep"]


def _num(value):
    """Three significant digits, without exponents."""
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if value >= 0.001 else f"{value:.4f}"


def _label(fraction):
    return "full" if fraction == 1 else (f"1/{round(1 / fraction)}" if fraction < 1 else f"{fraction:g}x")


def report(results, per_batch):
    """The Markdown tables of the measured sizes; returns (text, largest time exponent)."""
    fractions = sorted(results)
    sizes = [results[f]["layout"]["utterances"] for f in fractions]
    labels = [_label(f) for f in fractions]
    lines = ["| | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for key, name in (("speakers", "speakers (dev)"), ("videos", "videos (sessions)"),
                      ("utterances", "utterances (dev)")):
        lines.append(f"| {name} | " + " | ".join(f"{results[f]['layout'][key]:,}" for f in fractions) + " |")
    for name, key in (("training rows (98 %)", "train_rows"), (f"batches of {per_batch} per epoch, 1 rank", "batches"),
                      ("batches per rank, 8 ranks", "batches8")):
        lines.append(f"| {name} | " + " | ".join(f"{results[f]['dataio_prep'][key]:,}" for f in fractions) + " |")
    lines.append("| train.csv MB | " + " | ".join(f"{results[f]['prepare']['csv_mb']:.0f}" for f in fractions) + " |")
    lines.append("| layout written in s (not a recipe step) | "
                 + " | ".join(f"{results[f]['layout_s']:.0f}" for f in fractions) + " |")
    lines += ["", "Wall time (s), each stage in a fresh process:", "",
              "| stage | " + " | ".join(labels) + " | growth exponent |",
              "|---|" + "---|" * (len(labels) + 1)]
    worst = -math.inf
    for name, stage, key, counted in ROWS:
        values = [results[f][stage][key] for f in fractions]
        exponent = growth_exponent(sizes, values) if counted else float("nan")
        if counted and math.isfinite(exponent):
            worst = max(worst, exponent)
        shown = "" if not counted else f"{exponent:.2f}"
        lines.append(f"| {name} | " + " | ".join(_num(v) for v in values) + f" | {shown} |")
    lines += ["", "Peak RSS (MB) of each stage's process (exponent: of the RSS above the import "
              "baseline):", "", "| stage | " + " | ".join(labels) + " | growth exponent |",
              "|---|" + "---|" * (len(labels) + 1)]
    for stage in RSS_ROWS:
        values = [results[f][stage]["peak_rss_mb"] for f in fractions]
        above = [v - results[f]["import"]["peak_rss_mb"] for v, f in zip(values, fractions)]
        shown = "" if stage == "import" else f"{growth_exponent(sizes, above):.2f}"
        lines.append(f"| {stage} | " + " | ".join(f"{v:.0f}" for v in values) + f" | {shown} |")
    return "\n".join(lines), worst


def main(argv=None):
    """Command line entry point; returns the largest growth exponent of time.

    Arguments
    ---------
    argv : list of str, optional
        Arguments.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.125, 0.25, 1.0],
                        help="sizes relative to VoxCeleb2 dev (1 = 1,092,009 utterances)")
    parser.add_argument("--test-fraction", type=float, default=1.0,
                        help="size of the test root and trial list relative to VoxCeleb1-O")
    parser.add_argument("--hparams", default=DEFAULT_HPARAMS)
    parser.add_argument("--speakers-per-batch", type=int, default=None,
                        help="override the YAML's speakers_per_batch (P)")
    parser.add_argument("--work-dir", default=None,
                        help="where the layouts are written (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the layouts and manifests")
    parser.add_argument("--in-process", action="store_true",
                        help="run the stages in this process (faster; the RSS column is then "
                        "the running peak of this process, not each stage's own)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny layouts (3/1000 and 6/1000 of the size, 2 %% of the test "
                        "list), P = 2")
    parser.add_argument("--output", default=None, metavar="FILE.md",
                        help="also write the printed output, under a header with the command, "
                        "commit, CPU, nproc, threads, load average and date (bench_report.py)")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.stage:
        return child_main(args)
    if args.quick:
        args.fractions, args.test_fraction = [0.003, 0.006], 0.02
        args.speakers_per_batch = args.speakers_per_batch or 2
    with recorded(args.output, __file__, argv):
        return run(args)


def run(args):
    """Writes each layout, measures every stage on it, prints the tables."""
    work = args.work_dir or tempfile.mkdtemp(prefix="sb_angcl_scale_")
    os.makedirs(work, exist_ok=True)
    overrides = {}
    if args.speakers_per_batch:
        overrides["speakers_per_batch"] = args.speakers_per_batch
    results = {}
    for fraction in sorted(args.fractions):
        size_dir = os.path.join(work, f"size_{fraction:g}")
        shutil.rmtree(size_dir, ignore_errors=True)
        layout, layout_s = _timed(write_layout, size_dir, fraction, args.test_fraction)
        settings = recipe_settings(args.hparams, layout["data_folder"], layout["verification_file"],
                                   os.path.join(size_dir, "run"), overrides)
        results[fraction] = {"layout": layout, "layout_s": layout_s}
        log_path = os.path.join(work, f"size_{fraction:g}.log")
        if os.path.exists(log_path):
            os.remove(log_path)
        try:
            for stage in STAGES:
                results[fraction][stage] = measure(stage, args.hparams, settings, log_path,
                                                   args.in_process)
                print(f"# {_label(fraction)}: {stage} {results[fraction][stage]['seconds']:.2f} s, "
                      f"{results[fraction][stage]['peak_rss_mb']:.0f} MB", file=sys.stderr,
                      flush=True)
        finally:
            if not args.keep:
                shutil.rmtree(size_dir, ignore_errors=True)
    settings_used = {k: settings[k] for k in ("speakers_per_batch", "utterances_per_speaker",
                                              "positives_across_sessions", "split_ratio", "seed")}
    text, worst = report(results, f"{settings['speakers_per_batch']} x {settings['utterances_per_speaker']}")
    print(f"Recipe settings ({os.path.relpath(args.hparams, ROOT)}): "
          + ", ".join(f"{k} {v}" for k, v in settings_used.items())
          + f"; test root: {results[fraction]['layout']['test_utterances']:,} utterances, "
          f"{results[fraction]['layout']['trials']:,} trials (the same at every size)")
    if args.in_process:
        print("Stages run in one process (--in-process): peak RSS is that process's running peak.")
    print()
    print(text)
    print()
    print(f"ratio {worst:.3f}")
    if not args.keep and not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return worst


if __name__ == "__main__":
    main()

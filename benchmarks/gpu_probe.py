"""GPU behaviour of the full-size recipe: mixed precision, step time, peak memory.

Trains ``train_ecapa_angcl.yaml`` (the paper's system) and
``train_ecapa_aam.yaml`` (AAM-softmax alone) through the recipe's own entry
(``train`` of its ``train.py``) on the built-in corpus, for each
requested precision, and prints one table row per run: optimiser steps,
median step time (after 10 warm-up steps, CUDA-synchronised), peak GPU
memory, batches skipped for non-finite values, and the last epoch's losses.
``benchmarks/gpu_check.sh`` runs it; ``--device cpu --quick`` checks the
script itself in a minute on a CPU.

Authors
 * sb-angcl contributors
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
RECIPE = os.path.join(ROOT, "recipes", "VoxCeleb", "SpeakerRec")

import torch  # noqa: E402
from ablation import load_train  # noqa: E402  (benchmarks/ is this script's folder)

from sb_angcl.training.brain import AngularContrastiveBrain  # noqa: E402
from synthetic_corpus import generate_corpus  # noqa: E402


class ProbeBrain(AngularContrastiveBrain):
    """Times every training step (synchronised on CUDA)."""

    times = []

    def fit_batch(self, batch):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = super().fit_batch(batch)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        ProbeBrain.times.append(time.perf_counter() - start)
        return loss


def probe(system, precision, args, corpus, out):
    """One training run; returns its table row."""
    yaml = os.path.join(RECIPE, "hparams", f"train_ecapa_{system}.yaml")
    argv = [yaml, f"--data_folder={corpus}", f"--output_folder={out}/{system}_{precision}",
            f"--device={args.device}", f"--precision={precision}", f"--channels={args.channels}",
            f"--number_of_epochs={args.epochs}", "--warmup_epochs=1",
            f"--speakers_per_batch={args.speakers_per_batch}", "--utterances_per_speaker=4",
            f"--sentence_len={args.seconds}", f"--num_workers={args.workers}",
            "--ckpt_interval_minutes=1000", "--noprogressbar"]
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    ProbeBrain.times = []
    brain, _ = load_train(yaml)(
        argv, brain_class=ProbeBrain)
    timed = ProbeBrain.times[10:] or ProbeBrain.times
    peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else float("nan")
    stats = getattr(brain, "train_stats", {})
    return {"system": system, "precision": precision, "steps": len(ProbeBrain.times),
            "step_ms": 1000 * statistics.median(timed), "peak_gib": peak,
            "skipped": brain.skipped_nonfinite, "loss_cls": stats.get("loss_cls", float("nan")),
            "loss_con": stats.get("loss_con", float("nan")), "alpha": stats.get("alpha", float("nan"))}


def main(argv=None):
    """Run the probes and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--precisions", nargs="+", default=["fp16", "bf16", "fp32"])
    parser.add_argument("--systems", nargs="+", default=["angcl", "aam"])
    parser.add_argument("--channels", type=int, default=1024)
    parser.add_argument("--speakers_per_batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--num_speakers", type=int, default=160)
    parser.add_argument("--num_utterances", type=int, default=40)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--quick", action="store_true", help="tiny CPU-sized check of the script")
    args = parser.parse_args(argv)
    if args.quick:
        args.channels, args.speakers_per_batch, args.seconds, args.epochs = 16, 2, 1.0, 2
        args.num_speakers, args.num_utterances, args.workers = 6, 4, 0
    work = args.workdir or tempfile.mkdtemp(prefix="gpu_probe_")
    corpus = os.path.join(work, "corpus")
    if not os.path.isfile(os.path.join(corpus, "synthetic_corpus.json")):
        generate_corpus(corpus, layout="voxceleb", num_speakers=args.num_speakers,
                        num_utterances=args.num_utterances, num_sessions=4, seed=0,
                        overwrite=True, progress=False)
    rows = [probe(system, precision, args, os.path.join(corpus, "VoxCeleb1"), work)
            for precision in args.precisions for system in args.systems]
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    print(f"\n{name}, torch {torch.__version__}, ECAPA-TDNN C={args.channels}, "
          f"{args.speakers_per_batch}x4 utterances of {args.seconds:g} s per step")
    print("| system | precision | steps | median step (ms) | peak GPU memory (GiB) | "
          "skipped non-finite | loss_cls | loss_con | alpha |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['system']} | {r['precision']} | {r['steps']} | {r['step_ms']:.1f} | "
              f"{r['peak_gib']:.2f} | {r['skipped']} | {r['loss_cls']:.3f} | "
              f"{r['loss_con']:.3f} | {r['alpha']:.3f} |")
    for precision in args.precisions:
        by = {r["system"]: r for r in rows if r["precision"] == precision}
        if {"angcl", "aam"} <= set(by):
            print(f"{precision}: paper system / AAM step time = "
                  f"{by['angcl']['step_ms'] / by['aam']['step_ms']:.2f}")
    return rows


if __name__ == "__main__":
    main()

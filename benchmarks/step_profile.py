"""Where the time of a training epoch goes: a profile of the small recipe.

Runs the real VoxCeleb recipe (``train_ecapa_angcl_small.yaml`` by default,
on the built-in corpus) for ``--epochs`` epochs with the Brain instrumented,
once per augmentation domain named in ``--augmentation`` (``waveform``:
SpeechBrain's DropFreq/DropChunk on the audio; ``features``: masks on the
filterbanks), and prints, for each, the wall time of every part of the epoch
and its share:

* loading: waiting for the next batch (reading, cropping, collating);
* augmentation, features (Fbank + mean normalisation), encoder forward,
  objectives (both losses and the attention), balancing (MGDA's gradient
  dots), backward (and the per-step buffer copy), optimiser;
* validation (speaker-ID error on the dev set), checkpointing, logging.

The last line is ``ratio <epoch time with the last domain / with the first>``
(default: features / waveform), the two measured one after the other in this
process.

Example::

    python benchmarks/step_profile.py --threads 1
    python benchmarks/step_profile.py --augmentation features --epochs 2

Authors
 * sb-angcl contributors
"""

import argparse
import collections
import contextlib
import logging
import os
import platform
import sys
import tempfile
import time

import speechbrain as sb
import torch
from ablation import load_recipe_module  # benchmarks/ is this script's folder
from bench_report import recorded

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "recipes", "VoxCeleb", "SpeakerRec")
DEFAULT_HPARAMS = os.path.join(RECIPE, "hparams", "train_ecapa_angcl_small.yaml")
PARTS = ("loading", "augmentation", "features", "forward", "objectives", "balancing",
         "backward", "optimiser", "validation", "checkpointing", "logging")


def profiled_brain_class(base):
    """A subclass of ``base`` that adds up wall time per part of training.

    Arguments
    ---------
    base : type
        The recipe's Brain class.

    Returns
    -------
    type
        Its instances have ``times`` (a Counter of seconds per part) and
        ``batches``.
    """

    class ProfiledBrain(base):
        times = None

        @contextlib.contextmanager
        def timed(self, part):
            start = time.perf_counter()
            try:
                yield
            finally:
                self.times[part] += time.perf_counter() - start

        def compute_forward(self, batch, stage):
            if stage != sb.Stage.TRAIN:
                return super().compute_forward(batch, stage)
            batch = batch.to(self.device)
            wavs, lens = batch.sig
            wav_augment, feat_augment = self.augmenters(stage)
            with self.timed("augmentation"):
                if wav_augment is not None:
                    wavs, lens = wav_augment(wavs, lens)
            with self.timed("features"):
                feats = self.modules.compute_features(wavs)
                feats = self.modules.mean_var_norm(feats, lens)
            with self.timed("augmentation"):
                if feat_augment is not None:
                    feats, lens = feat_augment(feats, lens)
            with self.timed("forward"):
                embeddings = self.modules.embedding_model(feats, lens)
                if embeddings.dim() == 2:
                    embeddings = embeddings.unsqueeze(1)
                cosine = self.modules.classifier(embeddings)
            return {"embeddings": embeddings, "cosine": cosine, "lens": lens}

        def compute_objectives(self, outputs, batch, stage):
            if stage != sb.Stage.TRAIN:
                return super().compute_objectives(outputs, batch, stage)
            balancing = self.times["balancing"]  # timed inside, counted once
            with self.timed("objectives"):
                loss = super().compute_objectives(outputs, batch, stage)
            self.times["objectives"] -= self.times["balancing"] - balancing
            return loss

        def optimizers_step(self):
            with self.timed("optimiser"):
                return super().optimizers_step()

        def on_fit_batch_start(self, batch, should_step):
            now = time.perf_counter()
            if self._last_end is not None:
                self.times["loading"] += now - self._last_end
            self._batch_start = now
            self._parts_before = sum(self.times[p] for p in PARTS)
            return super().on_fit_batch_start(batch, should_step)

        def on_fit_batch_end(self, batch, outputs, loss, should_step):
            super().on_fit_batch_end(batch, outputs, loss, should_step)
            now = time.perf_counter()
            # What fit_batch spent outside the timed parts: backward + buffers.
            inside = sum(self.times[p] for p in PARTS) - self._parts_before
            self.times["backward"] += (now - self._batch_start) - inside
            self._last_end = now
            self.batches += 1

        def on_stage_start(self, stage, epoch=None):
            if stage == sb.Stage.VALID:
                self._valid_start = time.perf_counter()
                self._last_end = None
            if stage == sb.Stage.TRAIN:
                self._last_end = time.perf_counter()
            return super().on_stage_start(stage, epoch)

        def on_stage_end(self, stage, stage_loss, epoch=None):
            if stage != sb.Stage.VALID:
                return super().on_stage_end(stage, stage_loss, epoch)
            before = self.times["checkpointing"] + self.times["logging"]
            result = super().on_stage_end(stage, stage_loss, epoch)
            spent = time.perf_counter() - self._valid_start
            self.times["validation"] += spent - (
                self.times["checkpointing"] + self.times["logging"] - before
            )
            return result

    return ProfiledBrain


def _wrap_timed(brain, obj, method, part):
    original = getattr(obj, method)

    def wrapper(*args, **kwargs):
        with brain.timed(part):
            return original(*args, **kwargs)

    setattr(obj, method, wrapper)


def profile(hparams_file, data_folder, augmentation, epochs, work_dir):
    """Train ``epochs`` epochs with one augmentation domain; return the times.

    Arguments
    ---------
    hparams_file : str
        Recipe YAML.
    data_folder : str
        The recipe's ``data_folder``.
    augmentation : str
        ``waveform``, ``features`` or ``none``.
    epochs : int
        Epochs to train.
    work_dir : str
        Output folder of the run.

    Returns
    -------
    times : collections.Counter
        Seconds per part.
    batches : int
        Training batches run.
    total : float
        Wall seconds of ``fit``.
    """
    from sb_angcl.hyperparams import load_hparams
    from sb_angcl.recipe import prepare_and_size
    from sb_angcl.training.brain import AngularContrastiveBrain

    recipe = load_recipe_module(hparams_file)
    overrides = {"data_folder": data_folder, "output_folder": work_dir,
                 "number_of_epochs": epochs, "augmentation": augmentation,
                 "export_folder": None}
    overrides = prepare_and_size(hparams_file, overrides, recipe.prepare)
    hparams = load_hparams(hparams_file, overrides)
    # The recipe's own data pipeline: datasets and P x K batches, as train.py builds them.
    train_data, valid_data, _, batch_sampler = recipe.dataio_prep(hparams)
    brain = profiled_brain_class(AngularContrastiveBrain)(
        modules=hparams["modules"], opt_class=hparams["opt_class"], hparams=hparams,
        run_opts={"device": "cpu", "noprogressbar": True}, checkpointer=hparams["checkpointer"],
    )
    brain.times, brain.batches = collections.Counter(), 0
    _wrap_timed(brain, brain.checkpointer, "save_and_keep_only", "checkpointing")
    _wrap_timed(brain, hparams["train_logger"], "log_stats", "logging")
    _wrap_timed(brain, hparams["objective"].balancer, "forward", "balancing")
    start = time.perf_counter()
    brain.fit(brain.hparams.epoch_counter, train_data, valid_data,
              train_loader_kwargs={**hparams["train_dataloader_opts"], "batch_sampler": batch_sampler},
              valid_loader_kwargs=hparams["valid_dataloader_opts"])
    return brain.times, brain.batches, time.perf_counter() - start


def table(results):
    """Markdown table: seconds and share per part, one column pair per domain.

    Arguments
    ---------
    results : dict
        ``domain -> (times, batches, total)``.

    Returns
    -------
    str

    Example
    -------
    >>> t = collections.Counter(loading=1.0, forward=3.0)
    >>> print(table({"features": (t, 2, 4.0)}).splitlines()[2])
    | loading | 1.0 s (25 %) |
    """
    domains = list(results)
    lines = ["| part | " + " | ".join(domains) + " |", "|---|" + "---|" * len(domains)]
    for part in PARTS + ("other",):
        cells = []
        for d in domains:
            times, _, total = results[d]
            value = total - sum(times.values()) if part == "other" else times.get(part, 0.0)
            if part not in times and part != "other":
                value = 0.0
            cells.append(f"{value:.1f} s ({100 * value / total:.0f} %)")
        if part == "other" and all(abs(results[d][2] - sum(results[d][0].values())) < 0.05
                                   for d in domains):
            continue
        lines.append(f"| {part} | " + " | ".join(cells) + " |")
    lines.append("| **epoch total** | " + " | ".join(
        f"**{results[d][2]:.1f} s** ({results[d][1]} batches, "
        f"{1000 * results[d][2] / max(results[d][1], 1):.0f} ms/batch)" for d in domains) + " |")
    return "\n".join(lines)


def main(argv=None):
    """Command line entry point.

    Arguments
    ---------
    argv : list of str, optional
        Arguments.

    Returns
    -------
    float
        Epoch time of the last domain over the first.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hparams", default=DEFAULT_HPARAMS)
    parser.add_argument("--data_folder", default=None,
                        help="VoxCeleb1-layout corpus (default: generate the built-in one)")
    parser.add_argument("--augmentation", nargs="+", default=["waveform", "features"],
                        choices=["waveform", "features", "none"])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--speakers", type=int, default=40)
    parser.add_argument("--utterances", type=int, default=24)
    parser.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "sb_angcl_profile"))
    parser.add_argument("--output", default=None, metavar="FILE.md",
                        help="also write the printed output, under a header with the command, "
                        "commit, CPU, nproc, threads, load average and date (bench_report.py)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    with recorded(args.output, __file__, argv):
        return run(args)


def run(args):
    """Profile each augmentation domain, print the table; return the last / first epoch time.

    Arguments
    ---------
    args : argparse.Namespace
        Parsed command line of :func:`main`.

    Returns
    -------
    float
    """
    data_folder = args.data_folder
    if data_folder is None:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # synthetic_corpus/
        from synthetic_corpus import generate_corpus

        corpus = generate_corpus(os.path.join(args.work_dir, "corpus"), layout="voxceleb",
                                 num_speakers=args.speakers, num_utterances=args.utterances,
                                 progress=False, replace_stale=True)
        data_folder = corpus["voxceleb"]["root"]
    results = {}
    for domain in args.augmentation:
        run_dir = os.path.join(args.work_dir, f"run_{domain}")
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)
        results[domain] = profile(args.hparams, data_folder, domain, args.epochs, run_dir)
    print(f"Machine: nproc {os.cpu_count()}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {args.threads} thread(s); {args.epochs} epoch(s) of "
          f"{os.path.relpath(args.hparams, ROOT)}")
    print(table(results))
    first, last = results[args.augmentation[0]][2], results[args.augmentation[-1]][2]
    ratio = last / first
    print(f"ratio {ratio:.3f}")
    return ratio


if __name__ == "__main__":
    main()

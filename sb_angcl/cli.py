"""The ``sb-angcl`` command: verify two files, score a trial list, embed files, prepare data.

::

    sb-angcl verify MODEL a.wav b.wav
    sb-angcl score MODEL trials.txt --audio-root DIR [-o scores.txt]
    sb-angcl embed MODEL a.wav b.wav ... -o embeddings.npy
    sb-angcl prepare folder|kaldi DATA --save-folder DIR [--trials FILE]

``MODEL`` is a local folder SpeechBrain's ``SpeakerRecognition`` loads (a
recipe's ``<output_folder>/inference`` or a downloaded
``speechbrain/spkrec-ecapa-voxceleb``; nothing is downloaded). Scores are
cosines; with the folder's calibration, LLRs decided at the Bayes threshold,
otherwise at a cosine threshold (``--threshold``, SpeechBrain's 0.25).

Authors
 * sb-angcl contributors
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from sb_angcl import __version__
from sb_angcl.data import own_data
from sb_angcl.evaluation.calibrated import Calibration, bayes_threshold
from sb_angcl.evaluation.calibration import DECISION_PRIOR
from sb_angcl.evaluation.metrics import act_dcf, cllr

logger = logging.getLogger("sb_angcl.cli")

#: SpeechBrain's ``SpeakerRecognition.verify_batch`` threshold on the cosine.
DEFAULT_THRESHOLD = 0.25


class CommandError(Exception):
    """An error the command reports in one message (no traceback)."""


# ------------------------------------------------------------------ the model
def read_calibration(folder: str | os.PathLike, hparams: dict | None = None) -> dict | None:
    """The ``calibration`` mapping of ``hparams``, else of the folder's ``calibration.yaml``, or None.

    Example
    -------
    >>> read_calibration(tempfile.mkdtemp(), {"calibration": {"method": "linear", "p_target": 0.01}})
    {'method': 'linear', 'p_target': 0.01}
    >>> read_calibration(tempfile.mkdtemp(), {}) is None
    True
    """
    values = (hparams or {}).get("calibration")
    path = Path(folder) / "calibration.yaml"
    if not values and path.is_file():
        import yaml

        with open(path, encoding="utf-8") as fin:
            values = yaml.safe_load(fin) or {}
        values = values.get("calibration", values)
    if not values:
        return None
    if "p_target" not in values:
        raise CommandError(f"the calibration of {folder} names no p_target (the target prior "
                           "of its decisions): run verify.py on the model folder again")
    return {key: (list(v) if isinstance(v, (list, tuple)) else v) for key, v in dict(values).items()}


def calibrated_llr(calibration: dict, scores, enrol_seconds=None, test_seconds=None) -> np.ndarray:
    """LLRs of cosine scores by the folder's :class:`~sb_angcl.evaluation.calibrated.Calibration`.

    ``qmf`` durations are capped at the calibration's ``max_seconds``, as
    ``verify.py`` capped them when it fitted the map.

    Example
    -------
    >>> cal = {"method": "linear", "weights": [10.0], "offset": -5.0, "prior": 0.01}
    >>> calibrated_llr(cal, [0.5, 0.9]).tolist()
    [0.0, 4.0]
    """
    try:
        cal = Calibration.from_dict(calibration)
    except (KeyError, ValueError) as err:
        raise CommandError(f"the model's calibration is unusable ({err}): run verify.py "
                           "on the model folder again to write it")
    if cal.method == "qmf":
        cap = calibration.get("max_seconds") or math.inf
        enrol_seconds, test_seconds = (np.minimum(np.asarray(s, dtype=np.float64), cap)
                                       for s in (enrol_seconds, test_seconds))
    return cal.llr(scores, enrol_seconds, test_seconds)


def decision_threshold(calibration: dict) -> float:
    """The Bayes threshold on the LLR of the calibration's ``p_target`` (``c_miss``, ``c_fa``).

    Example
    -------
    >>> round(decision_threshold({"p_target": 0.01}), 4)
    4.5951
    """
    return bayes_threshold(float(calibration["p_target"]), float(calibration.get("c_miss", 1.0)),
                           float(calibration.get("c_fa", 1.0)))


class Model:
    """A speaker encoder loaded offline from ``folder`` by SpeechBrain's ``SpeakerRecognition``.

    ``max_seconds``: embed at most this many seconds of each file (None: all).
    """

    def __init__(self, folder: str, device: str = "cpu", max_seconds: float | None = None):
        from speechbrain.inference.speaker import SpeakerRecognition
        from speechbrain.utils.fetching import FetchConfig

        folder = os.path.abspath(folder)
        if not os.path.isfile(os.path.join(folder, "hyperparams.yaml")):
            raise CommandError(
                f"{folder} is not a model folder (no hyperparams.yaml): give a recipe's "
                "<output_folder>/inference, or a local copy of speechbrain/spkrec-ecapa-voxceleb "
                "(huggingface-cli download speechbrain/spkrec-ecapa-voxceleb --local-dir DIR).")
        overrides = {}
        with open(os.path.join(folder, "hyperparams.yaml"), encoding="utf-8") as fin:
            if any(line.startswith("pretrained_path:") for line in fin):
                overrides["pretrained_path"] = folder  # a hub folder: read its files here
        self._tmp = tempfile.TemporaryDirectory(prefix="sb-angcl-")
        try:
            self.model = SpeakerRecognition.from_hparams(
                source=folder, savedir=self._tmp.name, overrides=overrides,
                run_opts={"device": device}, fetch_config=FetchConfig(allow_network=False))
        except Exception as err:  # noqa: BLE001 (SpeechBrain raises many kinds)
            raise CommandError(f"cannot load the model in {folder}: {type(err).__name__}: {err}")
        self.folder, self.max_seconds = folder, max_seconds
        self.calibration = read_calibration(folder, self.model.hparams.__dict__)
        self.sample_rate = int(self.model.audio_normalizer.sample_rate)

    def load(self, path: str) -> torch.Tensor:
        """One file as a mono waveform at the model's rate; a clear error when it cannot be read."""
        if not os.path.isfile(path):
            raise CommandError(f"audio file not found: {path}")
        try:
            data, rate = sf.read(path, dtype="float32", always_2d=True)
        except Exception as err:  # noqa: BLE001 (libsndfile, decoder, OS errors)
            raise CommandError(f"cannot read audio file {path}: {type(err).__name__}: {err}")
        if data.shape[0] == 0:
            raise CommandError(f"audio file {path} is empty (0 samples)")
        if not np.isfinite(data).all():
            raise CommandError(f"audio file {path} holds NaN or infinite samples")
        signal = self.model.audio_normalizer(torch.from_numpy(data), rate)
        if self.max_seconds:
            signal = signal[: int(self.max_seconds * self.sample_rate)]
        return signal

    @torch.no_grad()
    def embed(self, path: str) -> tuple[torch.Tensor, float]:
        """The embedding of one file (1-D) and the seconds of audio it was computed on."""
        signal = self.load(path)
        batch = signal.unsqueeze(0).to(self.model.device)
        embedding = self.model.encode_batch(batch, normalize=False).reshape(-1)
        return embedding.cpu(), signal.shape[0] / self.sample_rate

    def embed_all(self, paths, desc: str = "Embedding") -> dict:
        """``path -> (embedding, seconds)`` of distinct files, with a progress bar on lists."""
        unique = list(dict.fromkeys(paths))
        return {p: self.embed(p) for p in tqdm(unique, desc=desc, unit="file",
                                                disable=len(unique) < 2)}

    def score(self, emb1: torch.Tensor, emb2: torch.Tensor) -> torch.Tensor:
        """Cosine scores of rows of two embedding matrices (the model's own ``similarity``)."""
        return self.model.similarity(emb1, emb2).reshape(-1)


# ------------------------------------------------------------------ commands
def cmd_verify(args) -> int:
    """``verify MODEL a b``: the score, the LLR when calibrated, and the decision."""
    for path in (args.first, args.second):
        if not os.path.isfile(path):
            raise CommandError(f"audio file not found: {path}")
    model = Model(args.model, args.device, args.max_seconds)
    (e1, s1), (e2, s2) = model.embed(args.first), model.embed(args.second)
    score = float(model.score(e1.unsqueeze(0), e2.unsqueeze(0))[0])
    print(f"{args.first}  {args.second}")
    print(f"score (cosine): {score:.4f}")
    if model.calibration and args.threshold is None:
        cal = model.calibration
        llr = float(calibrated_llr(cal, [score], [s1], [s2])[0])
        threshold = decision_threshold(cal)
        same = llr > threshold
        print(f"LLR: {llr:.3f} ({cal['method']} calibration of this model; accept when "
              f"LLR > {threshold:.3f}, the Bayes threshold at p_target "
              f"{cal['p_target']})")
    else:
        threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
        same = score > threshold
        why = "" if model.calibration else " (this model has no score calibration)"
        print(f"threshold (cosine): {threshold}{why}")
    print("decision: " + ("same speaker" if same else "different speakers"))
    return 0


def resolve_trials(trials, audio_root: str | None, wav_scp: str | None, trial_file: str) -> dict:
    """``name -> audio path`` for every utterance a trial list names; unknown names are an error."""
    names = list(dict.fromkeys(n for e, t, _ in trials for n in (e, t)))
    if wav_scp:
        table = {}
        with open(wav_scp, encoding="utf-8") as fin:
            for line in fin:
                fields = line.strip().split(maxsplit=1)
                if len(fields) == 2:
                    table[fields[0]] = fields[1]
        unknown = [n for n in names if n not in table]
        where = f"in {wav_scp}"
        paths = {n: table[n] for n in names if n in table}
    else:
        root = Path(audio_root or ".")
        paths = {n: str(root / n) for n in names}
        unknown = [n for n in names if not os.path.isfile(paths[n])]
        where = f"under {root.resolve()}"
    if unknown:
        listing = "\n".join(f"  {n}" for n in unknown[:10])
        more = f"\n  ... and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise CommandError(f"{trial_file} names {len(unknown)} utterance(s) not found {where}:\n"
                           f"{listing}{more}\nGive the folder the trial paths are relative to "
                           "(--audio-root) or a wav.scp mapping its IDs to files (--wav-scp).")
    return paths


def trial_metrics(scores, labels, llrs=None, calibration=None) -> dict:
    """SpeechBrain's EER and minDCF (normalised), and, given LLRs, Cllr and actual DCF.

    Costs are 1; the target prior is the calibration's ``p_target`` (else 0.01).

    Example
    -------
    >>> m = trial_metrics([0.9, 0.1, 0.8, 0.2], [1, 1, 0, 0])
    >>> m["EER"], round(m["minDCF"], 4)  # one miss costs 0.5 x p_target / p_target
    (0.5, 0.5)
    """
    from speechbrain.utils.metric_stats import EER, minDCF

    scores, labels = torch.as_tensor(scores, dtype=torch.float64), np.asarray(labels, dtype=bool)
    if labels.all() or not labels.any():
        raise CommandError("the trial list needs target and non-target trials for EER / minDCF")
    pos, neg = scores[torch.from_numpy(labels)], scores[torch.from_numpy(~labels)]
    p_target = float((calibration or {}).get("p_target", DECISION_PRIOR))
    # SpeechBrain's minDCF is the raw cost; divided by the cost of the best
    # trivial system (accept all or reject all), as the recipes' metrics report it.
    normaliser = min(p_target, 1 - p_target)
    result = {"EER": float(EER(pos, neg)[0]),
              "minDCF": float(minDCF(pos, neg, p_target=p_target)[0]) / normaliser,
              "p_target": p_target, "trials": int(len(labels)), "targets": int(labels.sum())}
    if llrs is not None:
        c_miss, c_fa = float(calibration.get("c_miss", 1.0)), float(calibration.get("c_fa", 1.0))
        result["Cllr"] = cllr(llrs, labels)
        result["actDCF"] = act_dcf(llrs, labels, p_target, c_miss, c_fa)
    return result


def cmd_score(args) -> int:
    """``score MODEL TRIALS``: a score file, and the metrics when the trials carry labels."""
    trials = own_data.read_trials(args.trials, unlabelled=True)
    paths = resolve_trials(trials, args.audio_root, args.wav_scp, args.trials)
    model = Model(args.model, args.device, args.max_seconds)
    table = model.embed_all([paths[n] for e, t, _ in trials for n in (e, t)])
    e1 = torch.stack([table[paths[e]][0] for e, _, _ in trials])
    e2 = torch.stack([table[paths[t]][0] for _, t, _ in trials])
    scores = model.score(e1, e2).numpy()
    llrs = None
    if model.calibration:
        llrs = calibrated_llr(model.calibration, scores,
                              [table[paths[e]][1] for e, _, _ in trials],
                              [table[paths[t]][1] for _, t, _ in trials])
    labelled = trials[0][2] is not None
    with open(args.output, "w", encoding="utf-8") as fout:
        for k, (enrol, test, label) in enumerate(trials):
            fields = [enrol, test, f"{scores[k]:.6f}"]
            fields += [f"{llrs[k]:.4f}"] if llrs is not None else []
            fields += [str(label)] if labelled else []
            fout.write(" ".join(fields) + "\n")
    columns = "enrol test score" + (" llr" if llrs is not None else "") + (" label" if labelled else "")
    print(f"Wrote {len(trials)} scores to {args.output} (columns: {columns})")
    if labelled:
        m = trial_metrics(scores, [t[2] for t in trials], llrs, model.calibration)
        line = (f"EER {100 * m['EER']:.2f}%  minDCF(p_target={m['p_target']:g}) {m['minDCF']:.4f}"
                f"  ({m['trials']} trials, {m['targets']} targets)")
        if llrs is not None:
            line += f"  Cllr {m['Cllr']:.4f}  actDCF {m['actDCF']:.4f}"
        else:
            line += "  (no calibration in the model: no Cllr)"
        print(line)
    return 0


def cmd_embed(args) -> int:
    """``embed MODEL FILES -o out.npy``: one row per file, in the order given."""
    files = list(args.files)
    if args.list:
        with open(args.list, encoding="utf-8") as fin:
            files += [line.strip() for line in fin if line.strip()]
    if not files:
        raise CommandError("no audio files given (FILES or --list)")
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise CommandError(f"audio file not found: {missing[0]}"
                           + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    model = Model(args.model, args.device, args.max_seconds)
    table = model.embed_all(files)
    matrix = torch.stack([table[f][0] for f in files])
    if args.normalize:
        matrix = torch.nn.functional.normalize(matrix, dim=1)
    np.save(args.output, matrix.numpy().astype(np.float32))
    print(f"Wrote {tuple(matrix.shape)} embeddings to {args.output} (rows in the order of the files)")
    return 0


def cmd_prepare(args) -> int:
    """``prepare folder|kaldi DATA --save-folder DIR``: the recipe manifests."""
    prepare = {"folder": own_data.prepare_speaker_folders,
               "kaldi": own_data.prepare_kaldi_dir}[args.layout]
    summary = prepare(
        args.data, args.save_folder, trials=args.trials, test_data=args.test_data,
        num_test_speakers=args.test_speakers, num_trials=args.num_trials,
        min_utterances=args.min_utterances, dev_fraction=args.dev_fraction,
        min_duration=args.min_duration, sample_rate=args.sample_rate,
        on_wrong_sample_rate=args.on_wrong_sample_rate, strict=args.strict, seed=args.seed)
    save = Path(args.save_folder)
    splits = summary["splits"]
    print(f"Prepared {save}: {splits['train']['speakers']} training speakers "
          f"({splits['train']['utterances']} utterances, {splits['dev']['utterances']} held out "
          f"for validation), {summary['trials']['total']} trials "
          f"({summary['trials']['target']} target) over {summary['test_speakers']} speakers; "
          f"trial list: {summary['trial_list']}")
    if summary.get("skipped"):
        print("Skipped (listed in prepare_summary.json): "
              + ", ".join(f"{k}={v}" for k, v in summary["skipped"].items()))
    target = (f"--output_folder={save.parent}" if save.name == "save" else
              " ".join(f"--{key}_annotation={save / name}" for key, name in
                       (("train", "train.csv"), ("valid", "dev.csv"), ("enrol", "enrol.csv"),
                        ("test", "test.csv"), ("trials", "trials.csv"))))
    print("Train on it (in a recipe folder, e.g. recipes/VoxCeleb/SpeakerRec):\n"
          f"  python train.py hparams/train_ecapa_angcl.yaml --data_folder={args.data} "
          f"--skip_prep=True {target}")
    return 0


# ------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sb-angcl`` (one sub-command per task)."""
    parser = argparse.ArgumentParser(
        prog="sb-angcl", description="Speaker verification with a SpeechBrain speaker encoder "
        "(an sb-angcl recipe's exported model, or speechbrain/spkrec-ecapa-voxceleb).")
    parser.add_argument("--version", action="version", version=f"sb-angcl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def model_command(name, help_text):
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("model", help="model folder (<output_folder>/inference, or a local "
                         "speechbrain/spkrec-ecapa-voxceleb)")
        cmd.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
        cmd.add_argument("--max-seconds", type=float, default=None,
                         help="embed at most this many seconds of each file (default: all)")
        return cmd

    cmd = model_command("verify", "score two files and decide: same speaker or not")
    cmd.add_argument("first")
    cmd.add_argument("second")
    cmd.add_argument("--threshold", type=float, default=None,
                     help="decide on the cosine at this threshold (default: the model's "
                          f"calibration, else {DEFAULT_THRESHOLD})")
    cmd.set_defaults(run=cmd_verify)

    cmd = model_command("score", "score a trial list; EER, minDCF (and Cllr) when labelled")
    cmd.add_argument("trials", help="'<label> <enrol> <test>' (VoxCeleb), '<enrol> <test> "
                     "target|nontarget' (Kaldi) or '<enrol> <test>' lines")
    where = cmd.add_mutually_exclusive_group()
    where.add_argument("--audio-root", help="folder the trial paths are relative to (default: .)")
    where.add_argument("--wav-scp", help="a wav.scp mapping the trial IDs to audio files")
    cmd.add_argument("-o", "--output", default="scores.txt",
                     help="score file: 'enrol test score [llr] [label]' per trial")
    cmd.set_defaults(run=cmd_score)

    cmd = model_command("embed", "write the embeddings of audio files to a .npy file")
    cmd.add_argument("files", nargs="*")
    cmd.add_argument("--list", help="a file with one audio path per line (after FILES)")
    cmd.add_argument("-o", "--output", required=True, help="output .npy, shape (files, dims)")
    cmd.add_argument("--normalize", action="store_true", help="L2-normalise each embedding")
    cmd.set_defaults(run=cmd_embed)

    cmd = sub.add_parser("prepare", help="the recipe manifests for your own data",
                         description=own_data.__doc__.split("\n\n")[0])
    cmd.add_argument("layout", choices=["folder", "kaldi"],
                     help="folder: <root>/<speaker>/[<session>/]<file>.wav|flac; kaldi: a data "
                          "directory with wav.scp, utt2spk (segments, trials)")
    cmd.add_argument("data", help="the folder or data directory")
    cmd.add_argument("--save-folder", required=True,
                     help="where the manifests go; <output_folder>/save of the training run")
    cmd.add_argument("--trials", help="a trial list over the utterance IDs (default: a kaldi "
                     "directory's trials, else one drawn over held-out speakers)")
    cmd.add_argument("--test-data", help="a second folder/directory with the evaluation speakers")
    cmd.add_argument("--test-speakers", type=int, default=None,
                     help="speakers held out when the trials are drawn (default: a tenth, >= 2)")
    cmd.add_argument("--num-trials", type=int, default=10000, help="most trials drawn")
    cmd.add_argument("--min-utterances", type=int, default=2)
    cmd.add_argument("--dev-fraction", type=float, default=0.05)
    cmd.add_argument("--min-duration", type=float, default=0.5)
    cmd.add_argument("--sample-rate", type=int, default=16000)
    cmd.add_argument("--on-wrong-sample-rate", default="resample",
                     choices=["resample", "skip", "error"])
    cmd.add_argument("--strict", action="store_true", help="stop on any skipped file")
    cmd.add_argument("--seed", type=int, default=1234)
    cmd.set_defaults(run=cmd_prepare)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``sb-angcl`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # SpeechBrain's loggers take their level from SB_LOG_LEVEL (INFO when unset)
    # when first made: its loading messages are not the command's to show.
    os.environ.setdefault("SB_LOG_LEVEL", "WARNING")
    logging.getLogger("speechbrain").setLevel(logging.WARNING)
    try:
        return args.run(args)
    except (CommandError, FileNotFoundError, ValueError) as err:
        print(f"sb-angcl {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

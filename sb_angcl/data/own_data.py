"""Manifests from your own data: a folder of speakers, or a Kaldi-style data directory.

Both give the recipes' manifests (``train.csv`` ... ``trials.csv``). In a
folder of speakers an utterance's ID is its path below the root and its
session the folder between speaker and file. A Kaldi directory has
``wav.scp``, ``utt2spk`` and optionally ``segments`` (the recording is then
the session) and ``trials``; commands and archives in ``wav.scp`` are refused.
A given trial list keeps its speakers out of training; without one, seeded
held-out speakers give a balanced list, written to ``<save_folder>/trials.txt``.
Skipped files are reported; inconsistent lists are errors naming file and line.

Authors
 * sb-angcl contributors
"""

from __future__ import annotations

import functools
import logging
import os
import random
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path

from sb_angcl.data import audio_probe, manifests, preparation
from sb_angcl.data.audio_probe import AUDIO_EXTENSIONS

logger = logging.getLogger(__name__)

OUTPUTS = ["train.csv", "dev.csv", "enrol.csv", "test.csv", "trials.csv"]

#: The trial list written when none is given (VoxCeleb's format).
TRIALS_FILE = "trials.txt"


FOLDER_LAYOUT = """\
  <root>/<speaker>/<file>.wav            (or .flac)
  <root>/<speaker>/<session>/<file>.wav  (a session: a recording, a day, a channel)"""

KALDI_LAYOUT = """\
  <dir>/wav.scp   <utt> <audio file>
  <dir>/utt2spk   <utt> <speaker>
  <dir>/segments  (optional) <utt> <recording> <start s> <end s>, wav.scp then lists recordings
  <dir>/trials    (optional) <enrol utt> <test utt> target|nontarget"""

TRIAL_FORMATS = (
    "one trial per line, '<label> <enrol> <test>' (label 1 or 0, VoxCeleb) or "
    "'<enrol> <test> target|nontarget' (Kaldi), utterances by their ID"
)


@dataclass(frozen=True)
class Utterance:
    """An audio file, or its segment ``start``-``end`` s.

    ``start`` None: the whole file; ``end`` None or negative: to the end.
    """

    utt_id: str
    path: str
    spk_id: str
    session: str = ""
    start: float | None = None
    end: float | None = None


# ------------------------------------------------------------------ readers
def scan_speaker_folders(root: str | os.PathLike,
                         report: preparation.PrepReport) -> list[Utterance]:
    """The utterances of ``<root>/<speaker>/[<session>/]<file>.{wav,flac}``, sorted.

    Files directly in ``<root>`` and files of other types are reported.
    """
    root = preparation.require_path(Path(root), "speaker folder", FOLDER_LAYOUT)
    utterances = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(root)
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            rel = (rel_dir / name).as_posix()
            if not rel_dir.parts:
                report.skip("outside_speaker_folder", str(root / name), "not in a speaker folder")
            elif not name.lower().endswith(AUDIO_EXTENSIONS):
                report.skip("not_audio", str(root / rel), "not .wav or .flac")
            else:
                session = "/".join(rel_dir.parts[1:])
                utterances.append(Utterance(rel, str(root / rel), rel_dir.parts[0], session))
    # One file in two formats would be one utterance twice.
    manifests.check_unique_ids(
        [{"ID": os.path.splitext(u.utt_id)[0], "wav": u.path} for u in utterances], str(root)
    )
    report.announce("outside_speaker_folder", f"file(s) outside the speaker folders of {root}",
                    f"Put each file in a folder named after its speaker:\n{FOLDER_LAYOUT}",
                    strict_applies=False)
    report.announce("not_audio", "file(s) that are not .wav or .flac",
                    "Convert them to .wav or .flac to use them (tools/convert_audio.py).",
                    strict_applies=False)
    return utterances


def _read_table(path: Path, columns: int, what: str) -> list[list[str]]:
    """Rows of a Kaldi table: the ID, then the rest (``columns`` fields in all; 0 = ID + rest)."""
    rows = []
    with open(path, encoding="utf-8") as fin:
        for number, line in enumerate(fin, 1):
            if not line.strip():
                continue
            fields = line.split() if columns else line.strip().split(maxsplit=1)
            if len(fields) != (columns or 2):
                raise ValueError(f"{path}, line {number}: expected {what}; got {line.strip()!r}")
            rows.append(fields)
    return rows


def read_kaldi_dir(folder: str | os.PathLike) -> list[Utterance]:
    """The utterances of a Kaldi-style data directory (``wav.scp``, ``utt2spk``, ``segments``)."""
    folder = preparation.require_path(Path(folder), "data directory", KALDI_LAYOUT)
    scp = preparation.require_path(folder / "wav.scp", "wav.scp", KALDI_LAYOUT)
    u2s = preparation.require_path(folder / "utt2spk", "utt2spk", KALDI_LAYOUT)
    wavs = _read_table(scp, 0, "'<id> <audio file>'")
    manifests.check_unique_ids([{"ID": i, "wav": p} for i, p in wavs], str(scp))
    for key, value in wavs:
        if value.endswith("|") or ".ark:" in value or value.startswith("-"):
            raise ValueError(
                f"{scp}: {key} is read through a command or an archive ({value!r}); sb-angcl "
                "reads audio files. Write each utterance to a .wav or .flac file (e.g. with "
                "Kaldi's wav-copy, or the command itself into a file) and list the files."
            )
    paths = {key: os.path.abspath(os.path.expanduser(value)) for key, value in wavs}
    speakers = dict(_read_table(u2s, 2, "'<utt> <speaker>'"))
    segments_file = folder / "segments"
    if segments_file.is_file():
        segments = _read_table(segments_file, 4, "'<utt> <recording> <start> <end>'")
        manifests.check_unique_ids([{"ID": s[0]} for s in segments], str(segments_file))
        unknown = [f"{utt} (recording {reco})" for utt, reco, _, _ in segments if reco not in paths]
        if unknown:
            raise ValueError(f"{segments_file} names recordings absent from {scp}:\n"
                             f"{manifests.format_file_list(unknown)}")
        items = [Utterance(utt, paths[reco], speakers.get(utt, ""), reco, float(a), float(b))
                 for utt, reco, a, b in segments]
    else:
        items = [Utterance(key, path, speakers.get(key, "")) for key, path in paths.items()]
    listed = {u.utt_id for u in items}
    no_speaker = [u.utt_id for u in items if u.utt_id not in speakers]
    no_audio = [utt for utt in speakers if utt not in listed]
    for names, what in ((no_speaker, f"have no speaker in {u2s}"),
                        (no_audio, f"in {u2s} have no audio in {scp}")):
        if names:
            raise ValueError(f"{len(names)} utterance(s) {what}:\n{manifests.format_file_list(names)}\n"
                             "The two files must list the same utterances (Kaldi's "
                             "utils/fix_data_dir.sh keeps those in both).")
    return items


def read_trials(path: str | os.PathLike, unlabelled: bool = False) -> list[tuple[str, str, int]]:
    """``(enrol, test, label)`` per line of a VoxCeleb (``1 e t``) or Kaldi (``e t target``) list.

    ``unlabelled=True`` also accepts ``enrol test`` lines (label None), all or none.

    Example
    -------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "trials"
    >>> _ = p.write_text("u1 u2 target\\n0 u1 u3\\n")
    >>> read_trials(p)
    [('u1', 'u2', 1), ('u1', 'u3', 0)]
    """
    labels = {"1", "0", "target", "nontarget"}
    trials = []
    path = preparation.require_path(Path(path), "trial list", TRIAL_FORMATS)
    with open(path, encoding="utf-8") as fin:
        for number, line in enumerate(fin, 1):
            fields = line.split()
            if not fields:
                continue
            if unlabelled and len(fields) == 2:
                trials.append((fields[0], fields[1], None))
                continue
            first = len(fields) == 3 and fields[0].lower() in labels
            last = len(fields) == 3 and fields[2].lower() in labels
            if first == last:  # neither, or both (ambiguous)
                raise ValueError(f"{path}, line {number}: expected {TRIAL_FORMATS}; "
                                 f"got {line.strip()!r}")
            label, enrol, test = (fields if first else [fields[2], fields[0], fields[1]])
            trials.append((enrol, test, preparation.parse_trial_label(label, path, number)))
    if not trials:
        raise ValueError(f"{path} holds no trials; expected {TRIAL_FORMATS}")
    if len({t[2] is None for t in trials}) > 1:
        raise ValueError(f"{path} mixes labelled and unlabelled trials; label all or none.")
    return trials


# ------------------------------------------------------------------ trials
def balanced_trials(utterances: list[Utterance], num_trials: int,
                    seed: int) -> list[tuple[str, str, int]]:
    """A seeded list of target and as many non-target trials (``min(num_trials // 2, pairs)`` each).

    Target pairs are drawn speaker by speaker in turn (every speaker used
    evenly); no pair occurs twice, in either order.
    """
    rng = random.Random(seed)
    by_speaker = OrderedDict()
    for utt in utterances:
        by_speaker.setdefault(utt.spk_id, []).append(utt.utt_id)
    if len(by_speaker) < 2:
        raise ValueError("a trial list needs at least two held-out speakers; "
                         f"got {len(by_speaker)}: raise num_test_speakers.")
    capacity = {s: len(u) * (len(u) - 1) // 2 for s, u in by_speaker.items()}
    n_each = min(num_trials // 2, sum(capacity.values()))
    if n_each == 0:
        raise ValueError("no target trial can be made: every held-out speaker has one utterance.")
    seen, targets = set(), []
    speakers = [s for s in by_speaker if capacity[s]]
    while len(targets) < n_each:
        for spk in list(speakers):
            if len(targets) == n_each:
                break
            if capacity[spk] == 0:
                speakers.remove(spk)
                continue
            while True:
                a, b = rng.sample(by_speaker[spk], 2)
                if frozenset((a, b)) not in seen:
                    break
            seen.add(frozenset((a, b)))
            capacity[spk] -= 1
            targets.append((a, b, 1))
    names = list(by_speaker)
    nontargets = []
    while len(nontargets) < n_each:
        s1, s2 = rng.sample(names, 2)
        a, b = rng.choice(by_speaker[s1]), rng.choice(by_speaker[s2])
        if frozenset((a, b)) not in seen:
            seen.add(frozenset((a, b)))
            nontargets.append((a, b, 0))
    trials = targets + nontargets
    rng.shuffle(trials)
    return trials


def write_trials(path: str | os.PathLike, trials: list[tuple[str, str, int]]) -> None:
    """Writes trials in VoxCeleb's format, ``<label> <enrol> <test>``."""
    with open(path, "w", encoding="utf-8") as fout:
        fout.writelines(f"{label} {enrol} {test}\n" for enrol, test, label in trials)


# ------------------------------------------------------------------ preparation
def prepare_speaker_folders(data_folder, save_folder, trials=None, test_data=None, **options):
    """Writes the recipe manifests for ``<data_folder>/<speaker>/[<session>/]<file>.{wav,flac}``.

    Arguments
    ---------
    data_folder, save_folder : str or Path
        The folder of speaker folders; where the CSV files, ``trials.txt``
        (when drawn) and the summary go.
    trials : str or None
        A trial list over the utterance IDs (paths below the root); None
        draws one over held-out speakers.
    test_data : str or None
        A second folder of the same layout holding the evaluation speakers.
    **options
        As :func:`prepare_own_data`.

    Returns
    -------
    dict
        The summary also written to ``prepare_summary.json``.
    """
    return prepare_own_data("speaker folders", scan_speaker_folders, data_folder, save_folder,
                            trials, test_data, **options)


def prepare_kaldi_dir(data_folder, save_folder, trials=None, test_data=None, **options):
    """Writes the recipe manifests for a Kaldi-style data directory.

    The arguments are those of :func:`prepare_speaker_folders`; ``trials``
    None takes the evaluation directory's ``trials`` when it has one, else
    draws a list; ``test_data`` is a second data directory.
    """
    evaluation = Path(test_data or data_folder)
    if trials is None and (evaluation / "trials").is_file():
        trials = evaluation / "trials"
    return prepare_own_data("Kaldi data directory", lambda d, _report: read_kaldi_dir(d),
                            data_folder, save_folder, trials, test_data, **options)


def prepare_own_data(corpus, reader, data_folder, save_folder, trials=None, test_data=None,
                     num_test_speakers=None, num_trials=10000, min_utterances=2,
                     dev_fraction=0.05, min_duration=0.5, sample_rate=16000,
                     on_wrong_sample_rate="resample", strict=False, seed=1234, skip_prep=False):
    """The preparation both layouts share (:func:`sb_angcl.data.preparation.run_preparation`).

    ``corpus`` names it in messages; ``reader(folder, report)`` lists the
    :class:`Utterance` s. Without a trial list, ``num_test_speakers`` (default
    a tenth, at least 2) are held out and ``num_trials`` (half targets) drawn;
    training speakers with fewer than ``min_utterances`` usable files are
    skipped. The other options are those of the recipes' ``voxceleb_prepare.py``.
    """
    args = {"trials": None if trials is None else str(Path(trials).resolve()),
            "test_data": None if test_data is None else str(Path(test_data).resolve()),
            "num_test_speakers": num_test_speakers, "num_trials": int(num_trials),
            "min_utterances": int(min_utterances), "dev_fraction": dev_fraction,
            "min_duration": min_duration, "sample_rate": sample_rate,
            "on_wrong_sample_rate": on_wrong_sample_rate, "strict": strict, "seed": seed}
    setup = functools.partial(_setup, corpus, reader, data_folder, save_folder, args)
    return preparation.run_preparation(corpus, save_folder, OUTPUTS, setup, _build,
                                       skip_prep, strict)


def _setup(corpus, reader, data_folder, save_folder, args):
    preparation.check_options(args["on_wrong_sample_rate"], args["dev_fraction"],
                              args["min_duration"], args["sample_rate"])
    if args["min_utterances"] < 2:
        raise ValueError(f"min_utterances={args['min_utterances']}: a speaker needs two "
                         "utterances to give a positive pair.")
    save_folder = Path(save_folder).resolve()
    roots = [str(Path(data_folder).resolve())] + ([args["test_data"]] if args["test_data"] else [])
    digests = [preparation.file_digest(p) for p in _listing_files(roots, args["trials"])]
    opts = {"corpus": corpus, "data_folder": roots, "save_folder": str(save_folder),
            "inputs_sha256": digests, **args}
    return opts, {"corpus": corpus, "reader": reader, "roots": roots, "save_folder": save_folder,
                  **args}


def _listing_files(roots, trials):
    """The list files whose content decides the manifests (an edit forces a new preparation)."""
    names = ("wav.scp", "utt2spk", "segments")
    files = [Path(r) / n for r in roots for n in names if (Path(r) / n).is_file()]
    return files + ([Path(trials)] if trials and Path(trials).is_file() else [])


def _build(ctx, report):
    """Reads the layout, picks the evaluation side, probes, and makes the manifests."""
    corpus, roots = ctx["corpus"], ctx["roots"]
    items = ctx["reader"](roots[0], report)
    separate = ctx["reader"](roots[1], report) if len(roots) > 1 else []
    manifests.check_unique_ids([{"ID": u.utt_id, "wav": u.path} for u in items + separate],
                               " and ".join(roots))
    source = separate or items  # where the evaluation utterances come from
    by_id = {u.utt_id: u for u in source}
    if ctx["trials"]:
        trials = read_trials(ctx["trials"])
        named = list(OrderedDict.fromkeys(n for e, t, _ in trials for n in (e, t)))
        unknown = [f"{n} (no such utterance in {roots[-1]})" for n in named if n not in by_id]
        if unknown:
            raise preparation.missing_items_error(ctx["trials"], unknown)
        evaluation = [by_id[n] for n in named]
        test_speakers = {u.spk_id for u in evaluation}
    else:
        trials = None
        test_speakers = ({u.spk_id for u in separate} if separate
                         else _held_out(items, ctx["num_test_speakers"], ctx["seed"]))
        evaluation = [u for u in source if u.spk_id in test_speakers]
    training = items if separate else [u for u in items if u.spk_id not in test_speakers]
    rows, problems = _probe(training + evaluation, report, ctx)
    if trials is None:
        trials = balanced_trials([u for u in evaluation if u.utt_id in rows],
                                 ctx["num_trials"], ctx["seed"])
        write_trials(ctx["save_folder"] / TRIALS_FILE, trials)
        logger.info("Drew %d trials over %d held-out speakers into %s (reuse: trials=that file).",
                    len(trials), len(test_speakers), ctx["save_folder"] / TRIALS_FILE)
    else:
        unusable = [f"{u.utt_id} ({problems[u.utt_id]})" for u in evaluation
                    if u.utt_id in problems]
        if unusable:
            raise preparation.missing_items_error(ctx["trials"], unusable)
    train_rows = [rows[u.utt_id] for u in training if u.utt_id in rows]
    train_rows = manifests.mark_label_noise(_few_utterances(train_rows, ctx, report), {})
    train_rows = manifests.drop_short(train_rows, ctx["min_duration"], report)
    train, dev = manifests.split_dev(train_rows, ctx["dev_fraction"], ctx["seed"])
    if len({r["spk_id"] for r in train}) < 2:
        raise ValueError(f"{roots[0]}: fewer than two training speakers are left (after "
                         "holding out the test speakers); training needs at least two.")
    enrol = [rows[n] for n in OrderedDict.fromkeys(e for e, _, _ in trials)]
    test = [rows[n] for n in OrderedDict.fromkeys(t for _, t, _ in trials)]
    trial_rows = [{"enrol": e, "test": t, "label": label} for e, t, label in trials]
    tables = [
        ("train.csv", train, manifests.TRAIN_FIELDS),
        ("dev.csv", dev, manifests.TRAIN_FIELDS),
        ("enrol.csv", enrol, manifests.ITEM_FIELDS),
        ("test.csv", test, manifests.ITEM_FIELDS),
        ("trials.csv", trial_rows, ["enrol", "test", "label"]),
    ]
    summary = {
        "corpus": corpus,
        "data_folder": roots,
        "trial_list": ctx["trials"] or str(ctx["save_folder"] / TRIALS_FILE),
        "trial_list_drawn": not ctx["trials"],
        "splits": {name: preparation.split_stats(part) for name, part in
                   (("train", train), ("dev", dev), ("enrol", enrol), ("test", test))},
        "trials": preparation.trial_stats([t[2] for t in trials]),
        "test_speakers": len(test_speakers),
    }
    return tables, summary


def _held_out(items, num_test_speakers, seed):
    """A seeded choice of evaluation speakers among those with two files or more."""
    counts = Counter(u.spk_id for u in items)
    eligible = sorted(s for s, n in counts.items() if n >= 2)
    wanted = num_test_speakers or max(2, round(len(counts) / 10))
    if wanted < 2 or len(eligible) < wanted or len(counts) - wanted < 2:
        raise ValueError(
            f"cannot hold out {wanted} test speaker(s): {len(counts)} speakers, {len(eligible)} "
            "with two files or more. A drawn trial list needs two held-out speakers with two "
            "files each and two training speakers; give num_test_speakers, or a trial list.")
    return set(random.Random(seed).sample(eligible, wanted))


def _probe(items, report, ctx):
    """Manifest rows of the usable utterances, and why each other one is unusable."""
    sample_rate = ctx["sample_rate"]
    missing = {u.utt_id for u in items if not os.path.isfile(u.path)}
    for u in items:
        if u.utt_id in missing:
            report.skip("missing", u.path, f"utterance {u.utt_id}: no such file")
    report.announce("missing", "missing audio file(s)",
                    "Check the paths (relative paths in wav.scp are read from the current folder).")
    files = list(OrderedDict.fromkeys(u.path for u in items if u.utt_id not in missing))
    usable, info_by_path = audio_probe.probe_usable(files, f"Probing {ctx['corpus']}", report,
                                                  sample_rate, ctx["on_wrong_sample_rate"])
    preparation.announce_audio_problems(report, sample_rate, "Replace or delete them.")
    rows, problems = {}, {}
    for u in items:
        if u.utt_id in missing:
            problems[u.utt_id] = f"missing: {u.path}"
            continue
        if u.path not in usable:
            info = info_by_path[u.path]
            problems[u.utt_id] = (f"unreadable: {info.error}" if not info.ok
                                  else f"{info.sample_rate} Hz, skipped")
            continue
        info = usable[u.path]
        row = manifests.audio_row(u.utt_id, info, u.spk_id, session=u.session)
        if u.start is not None:
            start = int(round(u.start * info.sample_rate))
            stop = info.frames if u.end is None or u.end < 0 else int(round(u.end * info.sample_rate))
            if not 0 <= start < stop <= info.frames:
                problems[u.utt_id] = f"segment {u.start}-{u.end} s outside {info.duration:.2f} s"
                report.skip("bad_segment", u.utt_id, problems[u.utt_id])
                continue
            row.update(start=start, stop=stop, duration=(stop - start) / info.sample_rate)
        rows[u.utt_id] = row
    report.announce("bad_segment", "segment(s) outside their recording",
                    "Fix their start and end times in segments.")
    return rows, problems


def _few_utterances(rows, ctx, report):
    """Drops (and reports) the training speakers with fewer than ``min_utterances`` rows."""
    counts = Counter(row["spk_id"] for row in rows)
    few = {s for s, n in counts.items() if n < ctx["min_utterances"]}
    for spk in sorted(few):
        report.skip("few_utterances", spk, f"{counts[spk]} usable file(s)")
    report.announce("few_utterances",
                    f"training speaker(s) with fewer than {ctx['min_utterances']} usable files",
                    "Add files for them, or remove them.")
    return [r for r in rows if r["spk_id"] not in few]

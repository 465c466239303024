"""Data preparation for VoxCeleb1/2 speaker verification (sb-angcl recipe).

Expected layout (VoxCeleb2 after converting its m4a files to wav)::

    <root>/wav/<speaker idXXXXX>/<video id>/<NNNNN>.wav
    <root>/meta/languages.csv      optional: columns path,language
                                   (path relative to wav/)
    <root>/meta/label_noise.csv    optional: columns path,given_speaker,true_speaker
                                   (the built-in corpus's list of mislabelled files)

``data_folder`` may hold several roots (a list, or a comma-separated string),
e.g. VoxCeleb1 then VoxCeleb2. The trial list has the official
``veri_test2.txt`` format, one ``label enrol test`` per line, with paths
relative to the **first** root's ``wav/`` folder::

    1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav

Outputs in ``save_folder`` (columns in :mod:`sb_angcl.data.manifests`):

* ``train.csv``, ``dev.csv``: every utterance of every speaker that does not
  occur in the trial list (test speakers are left out of training), split per
  speaker by :func:`sb_angcl.data.manifests.split_dev`. IDs are paths relative to
  ``wav/`` (``id10001/1zcIwhmdeo4/00001.wav``); ``language`` comes from
  ``meta/languages.csv`` when present; ``session`` is the video folder
  (``1zcIwhmdeo4``). ``true_spk_id`` / ``label_noise`` come from
  ``meta/label_noise.csv`` when present (``spk_id`` / 0 otherwise).
* ``enrol.csv``, ``test.csv``: the files on the enrolment and test side of
  the trials, with the trial list's path as ID, in order of first use
  (``session`` = video folder).
* ``trials.csv``: ``enrol,test,label`` (plus ``enrol_language,test_language``
  when the first root has ``meta/languages.csv``), in trial-list order.
* ``prepare_summary.json`` and ``prepare_opts.json``.

Short, unreadable and mis-sampled audio follow the rules in
:mod:`sb_angcl.data.manifests`.

Authors
 * sb-angcl contributors 2025
"""

import csv
import functools
import logging
import os
from collections import OrderedDict
from pathlib import Path
from urllib.parse import urlparse

from tqdm import tqdm

from sb_angcl.data import audio_probe, manifests, preparation

logger = logging.getLogger(__name__)

OUTPUTS = ["train.csv", "dev.csv", "enrol.csv", "test.csv", "trials.csv"]

LAYOUT = """\
  <root>/wav/<speaker idXXXXX>/<video id>/<NNNNN>.wav
  <root>/meta/languages.csv   (optional; columns path,language)
  <root>/meta/label_noise.csv (optional; columns path,given_speaker,true_speaker)
data_folder may list several roots (VoxCeleb1,VoxCeleb2); the trial list's
paths are relative to the first root's wav/ folder."""

FFMPEG_HINT = """\
VoxCeleb2 is distributed as .m4a (AAC): convert it to 16 kHz mono wav under
<root>/wav/ first, for example (run in <root>, where aac/ is):
  find aac -name '*.m4a' | while read -r f; do
    o="wav/${f#aac/}"; o="${o%.m4a}.wav"; mkdir -p "$(dirname "$o")"
    ffmpeg -nostdin -loglevel error -y -i "$f" -ac 1 -ar 16000 "$o"
  done"""

TRIAL_FORMAT = (
    "one trial per line: 'label enrol_path test_path', e.g.\n"
    "  1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav"
)


def prepare_voxceleb(
    data_folder,
    save_folder,
    verification_pairs_file,
    dev_fraction=0.05,
    min_duration=0.5,
    sample_rate=16000,
    on_wrong_sample_rate="resample",
    strict=False,
    seed=1234,
    skip_prep=False,
):
    """Writes the VoxCeleb manifests: train, dev, enrol, test and trials.

    Arguments
    ---------
    data_folder : str, Path or list
        VoxCeleb root(s) holding ``wav/``; a list or a comma-separated
        string. Trial paths are relative to the first root.
    save_folder : str or Path
        Where the CSV files and the summary are written.
    verification_pairs_file : str or Path
        Trial list (``veri_test2.txt`` format), or an http(s) URL that is
        downloaded into ``save_folder`` once.
    dev_fraction : float
        Fraction of each training speaker's utterances held out for
        validation (speakers with >= 3 utterances give at least one).
    min_duration : float
        Training utterances shorter than this (seconds) are dropped.
    sample_rate : int
        Expected sampling rate.
    on_wrong_sample_rate : str
        ``"resample"`` (keep; the loader resamples), ``"skip"`` or ``"error"``.
    strict : bool
        Raise on unreadable or empty audio instead of skipping it.
    seed : int
        Seed of the validation split.
    skip_prep : bool
        Do nothing (return the stored summary, if any).

    Returns
    -------
    dict
        The summary also written to ``prepare_summary.json``.

    Raises
    ------
    FileNotFoundError
        A root, its ``wav/`` folder or the trial list is missing.
    ValueError
        Unconverted ``.m4a`` files, duplicate IDs, trials naming missing or
        unusable files, a bad option, or (``strict``) unreadable audio.

    Example
    -------
    >>> import tempfile, numpy, soundfile
    >>> root = Path(tempfile.mkdtemp())
    >>> for spk in ["id10001", "id10002", "id10270"]:
    ...     os.makedirs(root / "wav" / spk / "vid")
    ...     for i in range(4):
    ...         soundfile.write(str(root / "wav" / spk / "vid" / f"0000{i}.wav"),
    ...                         numpy.zeros(16000), 16000)
    >>> _ = (root / "veri.txt").write_text(
    ...     "1 id10270/vid/00000.wav id10270/vid/00001.wav\\n")
    >>> summary = prepare_voxceleb(root, root / "save", root / "veri.txt")
    >>> summary["splits"]["train"]["speakers"], summary["trials"]["total"]
    (2, 1)
    """
    args = {
        "dev_fraction": dev_fraction,
        "min_duration": min_duration,
        "sample_rate": sample_rate,
        "on_wrong_sample_rate": on_wrong_sample_rate,
        "strict": strict,
        "seed": seed,
    }
    setup = functools.partial(_setup, data_folder, save_folder, verification_pairs_file, args)
    return preparation.run_preparation("VoxCeleb", save_folder, OUTPUTS, setup, _build, skip_prep, strict)


def _setup(data_folder, save_folder, verification_pairs_file, args):
    """Checks the options, finds the roots and the trial list; returns (opts, context)."""
    preparation.check_options(
        args["on_wrong_sample_rate"], args["dev_fraction"], args["min_duration"], args["sample_rate"]
    )
    roots = preparation.parse_data_folders(data_folder)
    save_folder = Path(save_folder)
    save_folder.mkdir(parents=True, exist_ok=True)
    trial_file = _fetch_trial_list(verification_pairs_file, save_folder)
    noise_files = [root / "meta" / "label_noise.csv" for root in roots]
    opts = {
        "data_folder": [str(r) for r in roots],
        "save_folder": str(save_folder.resolve()),
        "verification_pairs_file": str(trial_file),
        "trial_list_sha256": preparation.file_digest(trial_file),
        "label_noise_sha256": [
            preparation.file_digest(p) if p.is_file() else None for p in noise_files
        ],
        **args,
    }
    return opts, {"roots": roots, "trial_file": trial_file, "noise_files": noise_files, **args}


def _build(ctx, report):
    """Scans, probes and filters; returns the manifests and the summary."""
    roots, trial_file, sample_rate = ctx["roots"], ctx["trial_file"], ctx["sample_rate"]
    for root in roots:
        _check_root(root)
    trials = read_verification_pairs(trial_file)
    test_speakers = {p.split("/")[0] for e, t, _ in trials for p in (e, t)}
    languages = [_read_languages(root) for root in roots]
    noise = {}
    for path in ctx["noise_files"]:
        noise.update(manifests.read_label_noise(path) or {})

    # Evaluation items (paths relative to the first root's wav/): check
    # they exist before the long scan of the training folders.
    eval_rels = list(OrderedDict.fromkeys(p for e, t, _ in trials for p in (e, t)))
    eval_paths = {rel: roots[0] / "wav" / rel for rel in eval_rels}
    missing = [
        f"{rel} (missing: {path})" for rel, path in eval_paths.items() if not path.is_file()
    ]
    if missing:
        raise preparation.missing_items_error(trial_file, missing)

    # Training candidates: every wav of every non-test speaker, all roots.
    candidates = []
    for i, root in enumerate(roots):
        for rel in _list_wavs(root, exclude=test_speakers):
            candidates.append((str(root / "wav" / rel), rel, i))
    manifests.check_unique_ids(
        [{"ID": rel, "wav": path} for path, rel, _ in candidates], "train.csv"
    )
    usable, info_by_path = audio_probe.probe_usable(
        [c[0] for c in candidates] + [str(p) for p in eval_paths.values()],
        "Probing VoxCeleb audio",
        report,
        sample_rate,
        ctx["on_wrong_sample_rate"],
    )
    preparation.announce_audio_problems(
        report, sample_rate, "Re-download, re-extract or re-convert them, or delete them."
    )
    rows = []
    for path, rel, i in candidates:
        if path in usable:
            language = languages[i].get(rel, "") if languages[i] else ""
            rows.append(
                manifests.audio_row(
                    rel, usable[path], rel.split("/")[0], language=language, session=_video(rel)
                )
            )
    manifests.mark_label_noise(rows, noise)
    rows = manifests.drop_short(rows, ctx["min_duration"], report)
    train, dev = manifests.split_dev(rows, ctx["dev_fraction"], ctx["seed"])
    problems = audio_probe.unusable_items(
        ((rel, eval_paths[rel]) for rel in eval_rels), usable, info_by_path
    )
    if problems:
        raise preparation.missing_items_error(trial_file, problems)
    enrol, test, trial_rows, trial_fields = _evaluation_manifests(
        trials, languages[0], lambda rel: usable[str(eval_paths[rel])]
    )
    tables = [
        ("train.csv", train, manifests.TRAIN_FIELDS),
        ("dev.csv", dev, manifests.TRAIN_FIELDS),
        ("enrol.csv", enrol, manifests.ITEM_FIELDS),
        ("test.csv", test, manifests.ITEM_FIELDS),
        ("trials.csv", trial_rows, trial_fields),
    ]
    summary = {
        "corpus": "VoxCeleb",
        "data_folder": [str(r) for r in roots],
        "trial_list": str(trial_file),
        "splits": {
            "train": preparation.split_stats(train),
            "dev": preparation.split_stats(dev),
            "enrol": preparation.split_stats(enrol),
            "test": preparation.split_stats(test),
        },
        "trials": preparation.trial_stats([t[2] for t in trials]),
        "test_speakers": len(test_speakers),
        "languages": languages[0] is not None,
        "label_noise": sum(r["label_noise"] for r in train + dev),
    }
    return tables, summary


def _evaluation_manifests(trials, languages, info_of):
    """Rows of enrol.csv, test.csv and trials.csv (and the trial columns)."""
    lang0 = languages or {}

    def eval_row(rel):
        """The manifest row of one evaluation file (its speaker, language and video)."""
        return manifests.audio_row(
            rel,
            info_of(rel),
            rel.split("/")[0],
            language=lang0.get(rel, ""),
            session=_video(rel),
        )

    enrol = [eval_row(r) for r in OrderedDict.fromkeys(e for e, _, _ in trials)]
    test = [eval_row(r) for r in OrderedDict.fromkeys(t for _, t, _ in trials)]
    trial_fields = ["enrol", "test", "label"]
    if languages is not None:
        trial_fields += ["enrol_language", "test_language"]
    trial_rows = [
        {
            "enrol": e,
            "test": t,
            "label": label,
            "enrol_language": lang0.get(e, ""),
            "test_language": lang0.get(t, ""),
        }
        for e, t, label in trials
    ]
    return enrol, test, trial_rows, trial_fields


def _video(rel):
    """Session of ``spk/video/file.wav``: the video folder."""
    parts = rel.split("/")
    return parts[1] if len(parts) >= 3 else ""


def read_verification_pairs(path):
    """Reads a VoxCeleb trial list (``label enrol test`` per line).

    Arguments
    ---------
    path : str or Path
        The trial list, e.g. ``veri_test2.txt``.

    Returns
    -------
    list of tuple
        ``(enrol, test, label)`` per trial, in file order; label 1 or 0.

    Example
    -------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "veri.txt"
    >>> _ = p.write_text("1 a/x/1.wav a/y/2.wav\\n\\n0 a/x/1.wav b/z/3.wav\\n")
    >>> read_verification_pairs(p)
    [('a/x/1.wav', 'a/y/2.wav', 1), ('a/x/1.wav', 'b/z/3.wav', 0)]
    """
    trials = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3:
                raise ValueError(
                    f"{path}, line {line_no}: expected {TRIAL_FORMAT}\n"
                    f"got: {line.strip()!r}"
                )
            label = preparation.parse_trial_label(parts[0], path, line_no)
            trials.append((parts[1], parts[2], label))
    if not trials:
        raise ValueError(f"{path} holds no trials; expected {TRIAL_FORMAT}")
    return trials


def _fetch_trial_list(source, save_folder):
    source = str(source)
    if source.startswith(("http://", "https://")):
        dest = save_folder / os.path.basename(urlparse(source).path)
        if not dest.is_file():
            from speechbrain.utils.data_utils import download_file

            download_file(source, str(dest))
        return dest
    return preparation.require_path(
        Path(source).resolve(), "verification_pairs_file (trial list)", TRIAL_FORMAT
    )


def _check_root(root):
    preparation.require_path(root, "VoxCeleb folder", LAYOUT)
    hint = ""
    if any((root / sub).is_dir() for sub in ("aac", "dev/aac", "test/aac")):
        hint = FFMPEG_HINT
    preparation.require_path(root / "wav", "wav/ folder", LAYOUT, hint)


def _scan(folder, extensions, exclude):
    """Relative paths ``spk/video/file`` under ``folder``, sorted."""
    found = []
    if not folder.is_dir():
        return found
    with os.scandir(folder) as it:
        speakers = sorted(e.name for e in it if e.is_dir())
    for spk in tqdm(speakers, desc=f"Listing {folder}", unit="spk"):
        if spk in exclude:
            continue
        with os.scandir(folder / spk) as it:
            videos = sorted(e.name for e in it if e.is_dir())
        for video in videos:
            with os.scandir(folder / spk / video) as it:
                names = sorted(
                    e.name
                    for e in it
                    if e.name.lower().endswith(extensions) and e.is_file()
                )
            found.extend(f"{spk}/{video}/{name}" for name in names)
    return found


def _list_wavs(root, exclude):
    """The wav files under ``root/wav``; refuses unconverted m4a files."""
    found = _scan(root / "wav", (".wav", ".m4a"), exclude)
    wavs = [rel for rel in found if rel.lower().endswith(".wav")]
    m4a = [("wav", rel) for rel in found if rel.lower().endswith(".m4a")]
    m4a += [("aac", rel) for rel in _scan(root / "aac", (".m4a",), exclude)]
    have = {os.path.splitext(rel)[0] for rel in wavs}
    unconverted = [
        str(root / sub / rel)
        for sub, rel in m4a
        if os.path.splitext(rel)[0] not in have
    ]
    if unconverted:
        raise ValueError(
            f"{len(unconverted)} .m4a file(s) in {root} have no .wav "
            f"counterpart under {root / 'wav'}:\n"
            f"{manifests.format_file_list(unconverted)}\n{FFMPEG_HINT}"
        )
    return wavs


def _read_languages(root):
    """``path -> language`` from ``root/meta/languages.csv``, or None."""
    path = root / "meta" / "languages.csv"
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not {"path", "language"} <= set(reader.fieldnames or []):
            raise ValueError(
                f"{path} must have the columns 'path,language' (path relative "
                f"to wav/); found {reader.fieldnames}."
            )
        return {row["path"].strip(): row["language"].strip() for row in reader}

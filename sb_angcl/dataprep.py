"""Data-preparation helpers shared by the VoxCeleb and CN-Celeb recipes.

The recipe scripts (``recipes/*/SpeakerRec/*_prepare.py``) only know their
corpus layout. Everything else lives here: probing audio headers, reporting
skipped files, the rules for short and mis-sampled audio, the speaker-ID
validation split, CSV writing and the "already prepared" check.

Manifests
---------
Every item CSV has the columns :data:`ITEM_FIELDS`::

    ID,duration,wav,start,stop,spk_id,genre,language,session,sample_rate

``train.csv`` and ``dev.csv`` add :data:`LABEL_NOISE_FIELDS`,
``true_spk_id,label_noise``: the true speaker and 1 where the corpus's
label-noise list (:func:`read_label_noise`; the built-in corpus writes one
with ``label_noise > 0``) says the file is filed under another speaker;
``spk_id`` and 0 everywhere else, also when there is no list.

One row per utterance (or per run of utterances joined by CN-Celeb's
``short_utterance_rule="concat"``), ``start = 0``
and ``stop`` = the number of samples at the file's own rate, ``duration`` in
seconds. ``genre`` and ``language`` are empty where the corpus does not say.
``session`` is the recording the utterance comes from, as the layout names it
(VoxCeleb: the video folder; CN-Celeb: ``<genre>-<ss>`` from the file name),
meaningful within one speaker; rows joined from several sessions list them
joined by ``+``. Consumers (the sampler) read this column, never the paths.
``sample_rate`` is the file's rate: where it differs from the recipe's rate
(``on_wrong_sample_rate="resample"``) the loader must resample.
``trials.csv`` has ``enrol,test,label`` plus condition columns
(``enrol_<x>,test_<x>``).

Rules
-----
* **Probing.** Each file is opened with :class:`soundfile.SoundFile` (the same
  header read as :func:`soundfile.info`) and its last sample is read, in a
  thread pool with a progress bar (:func:`probe_files`). Files that
  libsndfile cannot open (text renamed ``.wav``, a truncated header, a 0-byte
  file) and files with zero samples are *unreadable*: they are skipped with
  one warning listing them and counted in ``prepare_summary.json``; with
  ``strict=True`` they are an error instead. A WAV file cut short in its data
  is *not* an error: libsndfile clamps the sample count to what is on disk, so
  the probe reports the true, shorter length. A FLAC file cut short in its
  data keeps the full length in its header; the probe catches it only because
  it also reads the last sample (the seek fails). Damage in the middle of a
  compressed file is not detected; the loader will fail on it.
* **Sample rate.** ``on_wrong_sample_rate`` decides what happens to audio not
  at the recipe's rate: ``"resample"`` (default) keeps the row and records the
  rate (counted under ``adjusted`` in the summary), ``"skip"`` leaves it out
  (counted under ``skipped``), ``"error"`` raises.
* **Short utterances.** Training utterances shorter than ``min_duration``
  (default 0.5 s) are dropped from ``train.csv`` and ``dev.csv`` and counted.
  Utterances shorter than the training crop but at least ``min_duration`` are
  kept: the loader pads them by repetition. Enrolment and test items are never
  dropped for being short. CN-Celeb additionally has ``short_utterance_rule``
  (see ``recipes/CNCeleb/SpeakerRec/cnceleb_short_utterances.py``).
* **Validation split.** ``dev.csv`` holds a seeded fraction of the training
  speakers' utterances, for the speaker-ID error rate: see :func:`split_dev`.
* **Skipping done work.** When every output exists and the stored
  ``prepare_opts.json`` equals the current options, preparation returns the
  stored summary without rescanning (:func:`load_if_prepared`).

Authors
 * sb-angcl contributors 2025
"""

from __future__ import annotations

import concurrent.futures
import csv
import hashlib
import json
import logging
import os
import random
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

logger = logging.getLogger(__name__)


#: Version of the manifest format; part of the stored options, so a change
#: here forces a fresh preparation.
PREP_VERSION = 2

#: Columns of every item CSV (train, dev, enrol, test).
ITEM_FIELDS = [
    "ID",
    "duration",
    "wav",
    "start",
    "stop",
    "spk_id",
    "genre",
    "language",
    "session",
    "sample_rate",
]

#: Extra columns of ``train.csv`` and ``dev.csv`` (label noise).
LABEL_NOISE_FIELDS = ["true_spk_id", "label_noise"]

#: Columns of ``train.csv`` and ``dev.csv``.
TRAIN_FIELDS = ITEM_FIELDS + LABEL_NOISE_FIELDS


#: Accepted values of ``on_wrong_sample_rate``.
WRONG_RATE_CHOICES = ("resample", "error", "skip")

#: Threads used to probe audio headers (I/O bound; libsndfile releases the GIL).
PROBE_THREADS = 16

#: Files handed to one probing task.
PROBE_CHUNK = 256

OPTS_FILE = "prepare_opts.json"
SUMMARY_FILE = "prepare_summary.json"

# At most this many names per category are stored in the summary file.
_MAX_LISTED = 1000


@dataclass(frozen=True)
class AudioInfo:
    """What the probe learnt about one audio file.

    Arguments
    ---------
    path : str
        The file.
    frames : int
        Number of samples per channel (0 if unreadable).
    sample_rate : int
        Sampling rate in Hz (0 if unreadable).
    channels : int
        Number of channels (0 if unreadable).
    error : str or None
        Why the file is unusable, or None when it is fine.

    Example
    -------
    >>> info = AudioInfo("a.wav", frames=8000, sample_rate=16000, channels=1)
    >>> info.ok, info.duration
    (True, 0.5)
    >>> AudioInfo("b.wav", 0, 0, 0, error="empty (0 samples)").ok
    False
    """

    path: str
    frames: int
    sample_rate: int
    channels: int
    error: str | None = None

    @property
    def ok(self):
        """True when the file can be used."""
        return self.error is None

    @property
    def duration(self):
        """Duration in seconds (0.0 if unreadable)."""
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def probe_audio(path):
    """Reads the header of one audio file, and checks its last sample.

    Never raises for a bad file: the problem is returned in ``error``.

    Arguments
    ---------
    path : str or Path
        The audio file.

    Returns
    -------
    AudioInfo
        Its length, rate and channels, or the reason it is unusable.

    Example
    -------
    >>> import tempfile, numpy, soundfile
    >>> tmp = tempfile.mkdtemp()
    >>> soundfile.write(f"{tmp}/a.wav", numpy.zeros(4000), 8000)
    >>> probe_audio(f"{tmp}/a.wav").duration
    0.5
    >>> _ = open(f"{tmp}/b.wav", "w").write("not audio")
    >>> probe_audio(f"{tmp}/b.wav").error
    'LibsndfileError: Error opening file: ...'
    """
    path = str(path)
    try:
        with sf.SoundFile(path) as f:
            frames, rate, channels = f.frames, f.samplerate, f.channels
            if frames > 0:
                # Header-only metadata (e.g. FLAC STREAMINFO) survives a
                # truncated file: seeking to the end exposes it cheaply.
                f.seek(frames - 1)
                if len(f.read(1)) != 1:
                    raise RuntimeError("file is shorter than its header says")
    except Exception as err:  # noqa: BLE001 (libsndfile, OS, decoder errors)
        message = str(err).replace(f"'{path}'", "file")  # named already
        return AudioInfo(path, 0, 0, 0, error=f"{type(err).__name__}: {message}")
    if frames <= 0:
        return AudioInfo(path, 0, rate, channels, error="empty (0 samples)")
    return AudioInfo(path, frames, rate, channels)


def _probe_chunk(paths):
    return [probe_audio(p) for p in paths]


def probe_files(paths, desc="Probing audio", num_threads=None):
    """Probes many files in a thread pool, with a progress bar.

    Arguments
    ---------
    paths : list of str or Path
        The files, in any order.
    desc : str
        Label of the progress bar.
    num_threads : int, optional
        Worker threads (default :data:`PROBE_THREADS`).

    Returns
    -------
    list of AudioInfo
        One per path, in the order of ``paths``.

    Example
    -------
    >>> import tempfile, numpy, soundfile
    >>> tmp = tempfile.mkdtemp()
    >>> for i in range(3):
    ...     soundfile.write(f"{tmp}/{i}.wav", numpy.zeros(1600 * (i + 1)), 16000)
    >>> infos = probe_files([f"{tmp}/{i}.wav" for i in range(3)])
    >>> [round(i.duration, 2) for i in infos]
    [0.1, 0.2, 0.3]
    """
    paths = [str(p) for p in paths]
    if not paths:
        return []
    num_threads = num_threads or PROBE_THREADS
    chunks = [paths[i : i + PROBE_CHUNK] for i in range(0, len(paths), PROBE_CHUNK)]
    results = [None] * len(chunks)
    pool = concurrent.futures.ThreadPoolExecutor(num_threads)
    with pool, tqdm(total=len(paths), desc=desc, unit="file") as bar:
        futures = {
            pool.submit(_probe_chunk, chunk): i for i, chunk in enumerate(chunks)
        }
        for future in concurrent.futures.as_completed(futures):
            i = futures[future]
            results[i] = future.result()
            bar.update(len(results[i]))
    return [info for chunk in results for info in chunk]


def format_file_list(items, limit=10):
    """Formats the first ``limit`` items and says how many there are in all.

    Arguments
    ---------
    items : list of str
        Names (with any reason already attached).
    limit : int
        How many to show.

    Returns
    -------
    str
        One item per line, indented, then "... and N more" when cut.

    Example
    -------
    >>> print(format_file_list(["a", "b", "c"], limit=2))
      a
      b
      ... and 1 more (3 in all)
    """
    items = list(items)
    lines = [f"  {item}" for item in items[:limit]]
    if len(items) > limit:
        lines.append(f"  ... and {len(items) - limit} more ({len(items)} in all)")
    return "\n".join(lines)


class PrepReport:
    """Collects the files a preparation skipped, and reports each kind once.

    Arguments
    ---------
    strict : bool
        If True, :meth:`announce` raises for the kinds it is asked to treat
        as errors under ``strict`` instead of warning.

    Example
    -------
    >>> report = PrepReport()
    >>> report.skip("unreadable", "/d/a.wav", "empty (0 samples)")
    >>> report.count("too_short", 2)
    >>> report.note("resampled")
    >>> report.summary()["skipped"], report.summary()["adjusted"]
    ({'unreadable': 1, 'too_short': 2}, {'resampled': 1})
    >>> report.announce("unreadable", "unreadable file(s)", "Fix them.")
    >>> strict = PrepReport(strict=True)
    >>> strict.skip("unreadable", "/d/b.wav", "empty (0 samples)")
    >>> try:
    ...     strict.announce("unreadable", "unreadable file(s)", "Fix them.")
    ... except ValueError as err:
    ...     print(err)
    1 unreadable file(s):
      /d/b.wav (empty (0 samples))
    Fix them. (or run with strict=False to skip them with a warning).
    """

    def __init__(self, strict=False):
        self.strict = strict
        self.files = OrderedDict()
        self.counts = OrderedDict()
        self.notes = OrderedDict()

    def skip(self, category, path, reason=""):
        """Records one skipped file.

        Arguments
        ---------
        category : str
            Why it was skipped (``unreadable``, ``wrong_sample_rate`` ...).
        path : str
            The file.
        reason : str
            Detail shown next to the file name.
        """
        self.files.setdefault(category, []).append((str(path), reason))
        self.counts[category] = self.counts.get(category, 0) + 1

    def count(self, category, n=1):
        """Counts ``n`` skipped items without naming them.

        Arguments
        ---------
        category : str
            Why they were skipped.
        n : int
            How many.
        """
        self.counts[category] = self.counts.get(category, 0) + int(n)

    def note(self, category, n=1):
        """Counts ``n`` items kept but changed (resampled, concatenated ...).

        Arguments
        ---------
        category : str
            What was done.
        n : int
            How many.
        """
        self.notes[category] = self.notes.get(category, 0) + int(n)

    def listing(self, category):
        """The skipped files of one kind as ``path (reason)`` strings.

        Arguments
        ---------
        category : str
            The kind.

        Returns
        -------
        list of str
        """
        return [
            f"{path} ({reason})" if reason else path
            for path, reason in self.files.get(category, [])
        ]

    def announce(self, category, what, fix, strict_applies=True):
        """Warns once about the files of one kind (or raises if strict).

        Arguments
        ---------
        category : str
            The kind, as given to :meth:`skip`.
        what : str
            Description, e.g. "unreadable or empty audio file(s)".
        fix : str
            What the user can do about it.
        strict_applies : bool
            Whether ``strict=True`` turns this warning into an error.

        Raises
        ------
        ValueError
            If ``strict`` and ``strict_applies`` and there are such files.
        """
        listing = self.listing(category)
        if not listing:
            return
        body = format_file_list(listing)
        if self.strict and strict_applies:
            raise ValueError(
                f"{len(listing)} {what}:\n{body}\n{fix} "
                "(or run with strict=False to skip them with a warning)."
            )
        logger.warning("Skipped %d %s:\n%s\n%s", len(listing), what, body, fix)

    def summary(self):
        """Counts per kind, and the (first 1000) skipped files per kind.

        Returns
        -------
        dict
            ``{"skipped": {kind: count}, "adjusted": {kind: count},
            "skipped_files": {kind: [names]}}``.
        """
        return {
            "skipped": dict(self.counts),
            "adjusted": dict(self.notes),
            "skipped_files": {k: self.listing(k)[:_MAX_LISTED] for k in self.files},
        }


def parse_data_folders(data_folder):
    """Turns ``data_folder`` into a list of absolute paths.

    Arguments
    ---------
    data_folder : str, Path or list
        One folder, a comma-separated string of folders, or a list.

    Returns
    -------
    list of Path

    Example
    -------
    >>> [p.name for p in parse_data_folders("/data/vox1, /data/vox2")]
    ['vox1', 'vox2']
    >>> [p.name for p in parse_data_folders(["/data/vox1"])]
    ['vox1']
    """
    if isinstance(data_folder, (str, os.PathLike)):
        items = str(data_folder).split(",")
    else:
        items = [str(item) for item in data_folder]
    roots = [
        Path(os.path.abspath(os.path.expanduser(item.strip())))
        for item in items
        if item.strip()
    ]
    if not roots:
        raise ValueError(f"data_folder is empty: {data_folder!r}")
    return roots


def require_path(path, what, layout, hint=""):
    """Raises a helpful ``FileNotFoundError`` if ``path`` does not exist.

    Arguments
    ---------
    path : Path
        The file or folder the layout requires.
    what : str
        What it is, for the message.
    layout : str
        The expected corpus layout, shown in the message.
    hint : str
        Extra advice appended to the message.

    Returns
    -------
    Path
        ``path``, when it exists.

    Example
    -------
    >>> try:
    ...     require_path(Path("/no/such/wav"), "wav folder", "<root>/wav/...")
    ... except FileNotFoundError as err:
    ...     print(err)
    wav folder not found: /no/such/wav
    Expected layout:
    <root>/wav/...
    """
    path = Path(path)
    if not path.exists():
        message = f"{what} not found: {path}\nExpected layout:\n{layout}"
        if hint:
            message += f"\n{hint}"
        raise FileNotFoundError(message)
    return path


def resolve_audio(base, rel, extensions=(".flac", ".wav")):
    """Finds the audio file a list entry names, whatever its extension.

    Corpus lists may name ``x.wav`` while the release holds ``x.flac``.

    Arguments
    ---------
    base : Path
        Folder the entry is relative to.
    rel : str
        The entry, e.g. ``test/id00800-singing-01-001.wav``.
    extensions : tuple of str
        Extensions tried, in order.

    Returns
    -------
    Path or None
        The existing file, or None.

    Example
    -------
    >>> import tempfile
    >>> tmp = Path(tempfile.mkdtemp())
    >>> _ = (tmp / "x.flac").write_bytes(b"")
    >>> resolve_audio(tmp, "x.wav").name
    'x.flac'
    >>> resolve_audio(tmp, "y.wav") is None
    True
    """
    stem = os.path.splitext(rel)[0]
    for ext in extensions:
        candidate = Path(base) / (stem + ext)
        if candidate.is_file():
            return candidate
    return None


def parse_trial_label(token, trial_file, line_no):
    """Reads a trial label: ``1``/``target`` or ``0``/``nontarget``.

    Arguments
    ---------
    token : str
        The label field.
    trial_file : str
        The trial list (for the error message).
    line_no : int
        Line number (for the error message).

    Returns
    -------
    int
        1 for a target trial, 0 otherwise.

    Example
    -------
    >>> parse_trial_label("target", "trials.lst", 1)
    1
    >>> parse_trial_label("0", "trials.lst", 2)
    0
    """
    value = {"1": 1, "0": 0, "target": 1, "nontarget": 0}.get(token.lower())
    if value is None:
        raise ValueError(
            f"{trial_file}, line {line_no}: label {token!r} is not one of "
            "1, 0, target, nontarget."
        )
    return value


def check_unique_ids(rows, what):
    """Raises ``ValueError`` naming the IDs that occur more than once.

    Arguments
    ---------
    rows : list of dict
        Rows with an ``ID`` key.
    what : str
        Which manifest, for the message.

    Example
    -------
    >>> check_unique_ids([{"ID": "a"}, {"ID": "b"}], "train")
    >>> try:
    ...     check_unique_ids([{"ID": "a", "wav": "/1/a"}, {"ID": "a", "wav": "/2/a"}], "train")
    ... except ValueError as err:
    ...     print(str(err).splitlines()[0])
    1 duplicate utterance ID(s) in train:
    """
    seen = {}
    duplicates = OrderedDict()
    for row in rows:
        if row["ID"] in seen:
            duplicates.setdefault(row["ID"], [seen[row["ID"]]]).append(
                row.get("wav", "")
            )
        else:
            seen[row["ID"]] = row.get("wav", "")
    if duplicates:
        listing = [f"{k}: {', '.join(v)}" for k, v in duplicates.items()]
        raise ValueError(
            f"{len(duplicates)} duplicate utterance ID(s) in {what}:\n"
            f"{format_file_list(listing)}\n"
            "Each utterance must occur once: is a corpus folder listed twice "
            "in data_folder, or does a file exist in two formats?"
        )


def audio_row(utt_id, info, spk_id, genre="", language="", session=""):
    """Builds one manifest row covering a whole file.

    Arguments
    ---------
    utt_id : str
        Row ID.
    info : AudioInfo
        The probed file.
    spk_id : str
        Speaker label.
    genre : str
        Genre, if known.
    language : str
        Language, if known.
    session : str
        Session (recording), if known.

    Returns
    -------
    dict
        The row, with the keys of :data:`ITEM_FIELDS`.

    Example
    -------
    >>> row = audio_row("u1", AudioInfo("/d/u1.wav", 24000, 16000, 1), "s1")
    >>> row["duration"], row["stop"], row["sample_rate"]
    (1.5, 24000, 16000)
    """
    return {
        "ID": utt_id,
        "duration": info.duration,
        "wav": info.path,
        "start": 0,
        "stop": info.frames,
        "spk_id": spk_id,
        "genre": genre,
        "language": language,
        "session": session,
        "sample_rate": info.sample_rate,
    }


LABEL_NOISE_COLUMNS = ("path", "given_speaker", "true_speaker")


def read_label_noise(path):
    """Reads a label-noise list: which files are filed under the wrong speaker.

    The list (``path,given_speaker,true_speaker``, written by the built-in
    corpus as ``meta/label_noise.csv``) names each file like the manifests'
    IDs; ``given_speaker`` must be the speaker folder the file is in.

    Arguments
    ---------
    path : str or Path
        The CSV file.

    Returns
    -------
    dict or None
        ``path -> true speaker``; None when the file does not exist.

    Raises
    ------
    ValueError
        Missing columns, or a row whose path does not start with its
        ``given_speaker`` folder.

    Example
    -------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "label_noise.csv"
    >>> _ = p.write_text("path,given_speaker,true_speaker\\nid1/v/00001.wav,id1,id2\\n")
    >>> read_label_noise(p), read_label_noise(p.parent / "absent.csv")
    ({'id1/v/00001.wav': 'id2'}, None)
    """
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not set(LABEL_NOISE_COLUMNS) <= set(reader.fieldnames or []):
            raise ValueError(
                f"{path} must have the columns {','.join(LABEL_NOISE_COLUMNS)}; found "
                f"{reader.fieldnames}. Regenerate the corpus or fix the header."
            )
        out = {}
        for line_no, row in enumerate(reader, 2):
            rel, given = row["path"].strip(), row["given_speaker"].strip()
            if rel.split("/")[0] != given:
                raise ValueError(
                    f"{path}, line {line_no}: {rel!r} is not in the folder of its "
                    f"given_speaker {given!r}; the path must start with '{given}/'."
                )
            out[rel] = row["true_speaker"].strip()
    return out


def mark_label_noise(rows, noise):
    """Adds ``true_spk_id`` and ``label_noise`` to training rows (in place).

    Arguments
    ---------
    rows : list of dict
        Rows with ``ID`` and ``spk_id``.
    noise : dict or None
        ``ID -> true speaker`` (:func:`read_label_noise`); None or empty for
        a clean corpus.

    Returns
    -------
    list of dict
        ``rows``.

    Example
    -------
    >>> rows = mark_label_noise([{"ID": "a/x/1.wav", "spk_id": "a"}], {"a/x/1.wav": "b"})
    >>> rows[0]["true_spk_id"], rows[0]["label_noise"]
    ('b', 1)
    """
    noise = noise or {}
    for row in rows:
        true = noise.get(row["ID"])
        row["true_spk_id"] = true if true is not None else row["spk_id"]
        row["label_noise"] = int(true is not None)
    return rows


def check_options(on_wrong_sample_rate, dev_fraction, min_duration, sample_rate):
    """Validates the options common to both recipes.

    Arguments
    ---------
    on_wrong_sample_rate : str
        One of :data:`WRONG_RATE_CHOICES`.
    dev_fraction : float
        In [0, 1).
    min_duration : float
        Non-negative seconds.
    sample_rate : int
        Positive rate in Hz.

    Example
    -------
    >>> check_options("resample", 0.05, 0.5, 16000)
    >>> try:
    ...     check_options("ignore", 0.05, 0.5, 16000)
    ... except ValueError as err:
    ...     print(err)
    on_wrong_sample_rate='ignore' is not one of ('resample', 'error', 'skip').
    """
    if on_wrong_sample_rate not in WRONG_RATE_CHOICES:
        raise ValueError(
            f"on_wrong_sample_rate={on_wrong_sample_rate!r} is not one of "
            f"{WRONG_RATE_CHOICES}."
        )
    if not 0 <= dev_fraction < 1:
        raise ValueError(f"dev_fraction={dev_fraction} must be in [0, 1).")
    if min_duration < 0:
        raise ValueError(f"min_duration={min_duration} must be >= 0.")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate={sample_rate} must be positive.")


def filter_probed(infos, report, sample_rate, on_wrong_sample_rate):
    """Drops unreadable files and applies the sample-rate policy.

    Unreadable files are recorded in ``report`` (category ``unreadable``);
    the caller announces them once with :meth:`PrepReport.announce`. Files at
    another rate are kept (``"resample"``, category ``resampled`` counted),
    skipped (``"skip"``, category ``wrong_sample_rate``) or make this function
    raise (``"error"``).

    Arguments
    ---------
    infos : list of AudioInfo
        Probe results.
    report : PrepReport
        Where skipped files are recorded.
    sample_rate : int
        The recipe's sampling rate.
    on_wrong_sample_rate : str
        ``"resample"``, ``"skip"`` or ``"error"``.

    Returns
    -------
    dict
        path -> AudioInfo for the usable files.

    Raises
    ------
    ValueError
        With ``on_wrong_sample_rate="error"``, naming the files.

    Example
    -------
    >>> infos = [AudioInfo("a", 16000, 16000, 1), AudioInfo("b", 8000, 8000, 1),
    ...          AudioInfo("c", 0, 0, 0, error="empty")]
    >>> report = PrepReport()
    >>> sorted(filter_probed(infos, report, 16000, "skip"))
    ['a']
    >>> report.summary()["skipped"]
    {'unreadable': 1, 'wrong_sample_rate': 1}
    >>> _ = filter_probed(infos, report, 16000, "resample")
    >>> report.summary()["adjusted"]
    {'resampled': 1}
    """
    usable = OrderedDict()
    wrong = []
    for info in infos:
        if not info.ok:
            report.skip("unreadable", info.path, info.error)
        elif info.sample_rate != sample_rate:
            wrong.append(info)
        else:
            usable[info.path] = info
    if wrong and on_wrong_sample_rate == "error":
        listing = [f"{i.path} ({i.sample_rate} Hz)" for i in wrong]
        raise ValueError(
            f"{len(wrong)} audio file(s) are not at {sample_rate} Hz:\n"
            f"{format_file_list(listing)}\n"
            f"Convert them (e.g. `sox in.wav -r {sample_rate} out.wav`), or "
            "set on_wrong_sample_rate='resample' to keep them and resample at "
            "load time, or on_wrong_sample_rate='skip' to leave them out."
        )
    for info in wrong:
        if on_wrong_sample_rate == "skip":
            report.skip("wrong_sample_rate", info.path, f"{info.sample_rate} Hz")
        else:
            usable[info.path] = info
            report.note("resampled")
    if wrong and on_wrong_sample_rate == "resample":
        logger.warning(
            "%d audio file(s) are not at %d Hz; they are kept and the loader "
            "resamples them (on_wrong_sample_rate='resample'):\n%s",
            len(wrong),
            sample_rate,
            format_file_list([f"{i.path} ({i.sample_rate} Hz)" for i in wrong]),
        )
    return usable


def drop_short(rows, min_duration, report=None):
    """Removes rows shorter than ``min_duration`` seconds.

    Arguments
    ---------
    rows : list of dict
        Rows with a ``duration`` key.
    min_duration : float
        Threshold in seconds.
    report : PrepReport, optional
        Counts the dropped rows under ``too_short``.

    Returns
    -------
    list of dict
        The rows kept, in order.

    Example
    -------
    >>> rows = [{"ID": "a", "duration": 0.3}, {"ID": "b", "duration": 2.0}]
    >>> [r["ID"] for r in drop_short(rows, 0.5)]
    ['b']
    """
    kept = [r for r in rows if r["duration"] >= min_duration]
    dropped = len(rows) - len(kept)
    if report is not None and dropped:
        report.count("too_short", dropped)
        logger.info(
            "Dropped %d training utterance(s) shorter than min_duration=%.2f s.",
            dropped,
            min_duration,
        )
    return kept


def split_dev(rows, dev_fraction=0.05, seed=1234, min_utterances=3):
    """Holds out a seeded fraction of each training speaker's utterances.

    For every speaker with at least ``min_utterances`` utterances,
    ``max(1, round(dev_fraction * n))`` of them (at most ``n - 1``) go to the
    validation split; the choice depends only on ``seed``, the speaker and the
    speaker's utterance IDs, not on the order of ``rows``. Every validation
    speaker therefore also occurs in training, as speaker-ID error needs.
    ``dev_fraction = 0`` gives an empty validation split.

    Arguments
    ---------
    rows : list of dict
        Rows with ``ID`` and ``spk_id``.
    dev_fraction : float
        Fraction held out per speaker, in [0, 1).
    seed : int
        Random seed.
    min_utterances : int
        Speakers with fewer utterances stay entirely in training.

    Returns
    -------
    train : list of dict
    dev : list of dict
        Both in the order of ``rows``.

    Example
    -------
    >>> rows = [{"ID": f"s{s}_{i}", "spk_id": f"s{s}"} for s in range(2) for i in range(s * 3 + 2)]
    >>> train, dev = split_dev(rows, 0.05, seed=1)
    >>> len(train), [r["spk_id"] for r in dev]
    (6, ['s1'])
    """
    if not 0 <= dev_fraction < 1:
        raise ValueError(f"dev_fraction={dev_fraction} must be in [0, 1).")
    by_speaker = OrderedDict()
    for row in rows:
        by_speaker.setdefault(row["spk_id"], []).append(row["ID"])
    dev_ids = set()
    if dev_fraction > 0:
        for spk, ids in by_speaker.items():
            n = len(ids)
            if n < min_utterances:
                continue
            k = min(max(1, int(dev_fraction * n + 0.5)), n - 1)
            rng = random.Random(f"{seed}/{spk}")
            dev_ids.update(rng.sample(sorted(ids), k))
    train = [r for r in rows if r["ID"] not in dev_ids]
    dev = [r for r in rows if r["ID"] in dev_ids]
    return train, dev


def split_stats(rows):
    """Counts speakers, utterances and hours of a manifest.

    Arguments
    ---------
    rows : list of dict
        Rows with ``spk_id`` and ``duration``.

    Returns
    -------
    dict
        ``speakers``, ``utterances``, ``hours``.

    Example
    -------
    >>> split_stats([{"spk_id": "a", "duration": 1800.0}, {"spk_id": "a", "duration": 1800.0}])
    {'speakers': 1, 'utterances': 2, 'hours': 1.0}
    """
    return {
        "speakers": len({r["spk_id"] for r in rows}),
        "utterances": len(rows),
        "hours": round(sum(float(r["duration"]) for r in rows) / 3600, 4),
    }


def _format_value(value):
    if isinstance(value, float):
        return f"{value:.5f}"
    return value


def write_csv(path, rows, fields):
    """Writes rows to a CSV file atomically (a partial file is never left).

    Arguments
    ---------
    path : str or Path
        Output file.
    rows : list of dict
        Rows; missing keys are written empty, floats with 5 decimals.
    fields : list of str
        Columns, in order.

    Example
    -------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "x.csv"
    >>> write_csv(out, [{"ID": "a", "duration": 1.5}], ["ID", "duration", "wav"])
    >>> print(out.read_text().strip())
    ID,duration,wav
    a,1.50000,
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _format_value(row.get(k, "")) for k in fields})
    os.replace(tmp, path)


def file_digest(path):
    """SHA-256 of a file's content (used to notice an edited trial list).

    Arguments
    ---------
    path : str or Path
        The file.

    Returns
    -------
    str
        Hex digest.

    Example
    -------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "t.txt"
    >>> _ = p.write_text("")
    >>> file_digest(p)[:8]
    'e3b0c442'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _normalise(opts):
    return json.loads(json.dumps({"prep_version": PREP_VERSION, **opts}, default=str))


def load_if_prepared(save_folder, outputs, opts):
    """Returns the stored summary if this preparation was already done.

    It was done if every output file exists and the ``prepare_opts.json``
    stored by :func:`save_prepared` equals ``opts`` (after a JSON round trip,
    so tuples and lists compare equal).

    Arguments
    ---------
    save_folder : str or Path
        Where the outputs are.
    outputs : list of str
        Output file names expected in ``save_folder``.
    opts : dict
        JSON-serialisable options of the current call.

    Returns
    -------
    dict or None
        The stored summary, or None if preparation must run.

    Example
    -------
    >>> import tempfile
    >>> tmp = tempfile.mkdtemp()
    >>> load_if_prepared(tmp, ["train.csv"], {"seed": 1}) is None
    True
    >>> _ = open(f"{tmp}/train.csv", "w").write("ID\\n")
    >>> save_prepared(tmp, {"trials": 0}, {"seed": 1})
    >>> load_if_prepared(tmp, ["train.csv"], {"seed": 1})
    {'trials': 0}
    >>> load_if_prepared(tmp, ["train.csv"], {"seed": 2}) is None
    True
    """
    save_folder = Path(save_folder)
    needed = list(outputs) + [OPTS_FILE, SUMMARY_FILE]
    if not all((save_folder / name).is_file() for name in needed):
        return None
    try:
        with open(save_folder / OPTS_FILE, encoding="utf-8") as f:
            stored = json.load(f)
        with open(save_folder / SUMMARY_FILE, encoding="utf-8") as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return None
    if stored != _normalise(opts):
        return None
    return summary


def forget_prepared(save_folder):
    """Removes the stored options, so an interrupted run is never reused.

    Arguments
    ---------
    save_folder : str or Path
        Where the outputs are.

    Example
    -------
    >>> import tempfile
    >>> forget_prepared(tempfile.mkdtemp())
    """
    try:
        os.remove(Path(save_folder) / OPTS_FILE)
    except FileNotFoundError:
        pass


def save_prepared(save_folder, summary, opts):
    """Writes ``prepare_summary.json``, then ``prepare_opts.json`` (last).

    Arguments
    ---------
    save_folder : str or Path
        Where the outputs are.
    summary : dict
        JSON-serialisable summary.
    opts : dict
        JSON-serialisable options of the call.

    Example
    -------
    >>> import tempfile
    >>> save_prepared(tempfile.mkdtemp(), {}, {"seed": 1})
    """
    save_folder = Path(save_folder)
    save_folder.mkdir(parents=True, exist_ok=True)
    for name, content in ((SUMMARY_FILE, summary), (OPTS_FILE, _normalise(opts))):
        tmp = save_folder / (name + ".part")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(content, f, indent=2, default=str)
        os.replace(tmp, save_folder / name)


def load_summary(save_folder):
    """Reads ``prepare_summary.json`` if present (used with ``skip_prep``).

    Arguments
    ---------
    save_folder : str or Path
        Where the outputs are.

    Returns
    -------
    dict
        The stored summary, or an empty dict.

    Example
    -------
    >>> import tempfile
    >>> load_summary(tempfile.mkdtemp())
    {}
    """
    try:
        with open(Path(save_folder) / SUMMARY_FILE, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def log_summary(summary):
    """Logs a prepared corpus's counts in a few readable lines.

    Arguments
    ---------
    summary : dict
        With ``splits`` (name -> :func:`split_stats`), ``trials``,
        ``skipped`` and ``adjusted``.

    Example
    -------
    >>> log_summary({"corpus": "x", "splits": {"train": split_stats([])},
    ...              "trials": {"total": 0}, "skipped": {}})
    """
    lines = [f"Prepared {summary.get('corpus', 'corpus')}:"]
    for name, stats in summary.get("splits", {}).items():
        lines.append(
            f"  {name}: {stats['speakers']} speakers, "
            f"{stats['utterances']} utterances, {stats['hours']:.2f} h"
        )
    trials = summary.get("trials", {})
    if trials:
        lines.append(
            f"  trials: {trials.get('total', 0)} "
            f"({trials.get('target', 0)} target, "
            f"{trials.get('nontarget', 0)} non-target)"
        )
    for key in ("skipped", "adjusted"):
        counts = summary.get(key, {})
        if counts:
            lines.append(
                f"  {key}: " + ", ".join(f"{k}={v}" for k, v in counts.items())
            )
    logger.info("\n".join(lines))


def trial_stats(labels):
    """Counts target and non-target trials.

    Arguments
    ---------
    labels : list of int
        Trial labels (1 target, 0 non-target).

    Returns
    -------
    dict
        ``total``, ``target``, ``nontarget``.

    Example
    -------
    >>> trial_stats([1, 0, 0])
    {'total': 3, 'target': 1, 'nontarget': 2}
    """
    target = sum(1 for label in labels if label)
    return {"total": len(labels), "target": target, "nontarget": len(labels) - target}


def missing_items_error(trial_file, problems):
    """Builds the error for trial items that are missing or unusable.

    Arguments
    ---------
    trial_file : str
        The trial list.
    problems : list of str
        ``item (why)`` strings.

    Returns
    -------
    ValueError

    Example
    -------
    >>> print(missing_items_error("t.txt", ["a.wav (missing: /d/a.wav)"]))
    t.txt names 1 utterance(s) that are missing or unusable:
      a.wav (missing: /d/a.wav)
    Check that data_folder points at the corpus the trial list belongs to.
    """
    return ValueError(
        f"{trial_file} names {len(problems)} utterance(s) that are missing "
        f"or unusable:\n{format_file_list(problems)}\n"
        "Check that data_folder points at the corpus the trial list belongs to."
    )


def run_preparation(corpus, save_folder, outputs, setup, build, skip_prep=False, strict=False):
    """The preparation skeleton both recipes share.

    ``skip_prep`` -> options (:func:`check_options`, the recipe's own checks and
    list digests) -> return the stored summary when already prepared with the
    same options (:func:`load_if_prepared`) -> build the manifests (probe,
    filter, rows, evaluation checks) -> write the CSV files -> save and log the
    summary (:func:`save_prepared`, :func:`log_summary`).

    Arguments
    ---------
    corpus : str
        Name in the log messages (``"VoxCeleb"``).
    save_folder : str or Path
        Where the CSV files and the summary are written.
    outputs : list of str
        The CSV files a finished preparation has.
    setup : callable
        ``setup() -> (opts, context)``: validates the arguments and finds the
        inputs; ``opts`` (JSON-serialisable) decides whether earlier work is
        reused, ``context`` is handed to ``build``.
    build : callable
        ``build(context, report) -> (manifests, summary)`` with ``manifests`` a
        list of ``(file name, rows, fields)`` and ``summary`` a dict; the
        report's counts are appended to it.
    skip_prep : bool
        Do nothing; return the stored summary, if any.
    strict : bool
        Passed to the :class:`PrepReport` handed to ``build``.

    Returns
    -------
    dict
        The summary also written to ``prepare_summary.json``.

    Example
    -------
    >>> import tempfile
    >>> save = Path(tempfile.mkdtemp())
    >>> setup = lambda: ({"n": 1}, None)
    >>> build = lambda ctx, report: ([("a.csv", [{"ID": "x"}], ["ID"])], {"corpus": "toy"})
    >>> run_preparation("toy", save, ["a.csv"], setup, build)["corpus"]
    'toy'
    >>> (save / "a.csv").read_text().splitlines()
    ['ID', 'x']
    """
    if skip_prep:
        logger.info("skip_prep=True: %s preparation skipped.", corpus)
        return load_summary(save_folder)
    opts, context = setup()
    save_folder = Path(save_folder)
    summary = load_if_prepared(save_folder, outputs, opts)
    if summary is not None:
        logger.info("%s already prepared in %s with these options; skipping.", corpus, save_folder)
        return summary
    save_folder.mkdir(parents=True, exist_ok=True)
    forget_prepared(save_folder)
    report = PrepReport(strict=strict)
    manifests, summary = build(context, report)
    for name, rows, fields in manifests:
        write_csv(save_folder / name, rows, fields)
    summary = {**summary, **report.summary()}
    save_prepared(save_folder, summary, opts)
    log_summary(summary)
    return summary


def probe_usable(paths, desc, report, sample_rate, on_wrong_sample_rate):
    """Probes ``paths`` and keeps the usable ones (:func:`probe_files`, :func:`filter_probed`).

    Arguments
    ---------
    paths : list of str
        Audio files.
    desc : str
        Progress-bar label.
    report : PrepReport
        Collects unreadable and mis-sampled files.
    sample_rate : int
        Expected rate.
    on_wrong_sample_rate : str
        ``"resample"``, ``"skip"`` or ``"error"``.

    Returns
    -------
    dict
        Usable path -> :class:`AudioInfo` (as :func:`filter_probed`).
    dict
        Every probed path -> :class:`AudioInfo`.

    Example
    -------
    >>> import tempfile, numpy, soundfile
    >>> p = tempfile.mkdtemp() + "/a.wav"
    >>> soundfile.write(p, numpy.zeros(800), 16000)
    >>> usable, info = probe_usable([p], "Probing", PrepReport(), 16000, "skip")
    >>> list(usable) == [p], info[p].frames
    (True, 800)
    """
    infos = probe_files(paths, desc=desc)
    usable = filter_probed(infos, report, sample_rate, on_wrong_sample_rate)
    return usable, {info.path: info for info in infos}


def unusable_items(items, usable, info_by_path):
    """Why evaluation items cannot be used: unreadable, or skipped for their rate.

    Arguments
    ---------
    items : iterable of (str, str)
        ``(name in the lists, path)`` of each evaluation file.
    usable : dict
        Usable paths (from :func:`probe_usable`).
    info_by_path : dict
        Probe results (from :func:`probe_usable`).

    Returns
    -------
    list of str
        ``"<name> (<reason>)"`` per unusable item, for :func:`missing_items_error`.

    Example
    -------
    >>> info = AudioInfo("b.wav", 800, 8000, 1)
    >>> unusable_items([("a", "a.wav"), ("b", "b.wav")], {"a.wav": None}, {"b.wav": info})
    ["b (8000 Hz, left out by on_wrong_sample_rate='skip')"]
    """
    problems = []
    for name, path in items:
        path = str(path)
        if path in usable:
            continue
        info = info_by_path[path]
        if not info.ok:
            problems.append(f"{name} (unreadable: {info.error})")
        else:
            problems.append(
                f"{name} ({info.sample_rate} Hz, left out by on_wrong_sample_rate='skip')"
            )
    return problems


def announce_audio_problems(report, sample_rate, fix_unreadable):
    """Warns about (or, with ``strict``, raises on) unreadable and skipped audio.

    Arguments
    ---------
    report : PrepReport
        The report holding the skipped files.
    sample_rate : int
        The expected rate (named in the message).
    fix_unreadable : str
        What the user can do about unreadable files.

    Example
    -------
    >>> announce_audio_problems(PrepReport(), 16000, "Delete them.")
    """
    report.announce("unreadable", "unreadable or empty audio file(s)", fix_unreadable)
    report.announce(
        "wrong_sample_rate",
        f"audio file(s) not at {sample_rate} Hz (on_wrong_sample_rate='skip')",
        "Use on_wrong_sample_rate='resample' to keep them.",
        strict_applies=False,
    )

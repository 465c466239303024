"""The data-preparation skeleton both recipes share, its report and its saved state.

The recipe scripts (``recipes/*/SpeakerRec/*_prepare.py``) only know their
corpus layout; they hand :func:`run_preparation` a ``setup`` and a ``build``
step, and use the checks of a recipe's inputs here (options, data folders,
corpus paths, trial labels) and the rows, probes and CSV writing of
:mod:`sb_angcl.data.manifests`.

* **Report.** :class:`PrepReport` collects the files a preparation skipped or
  changed and warns about each kind once (or raises, with ``strict=True``);
  the messages and counts end up in the log and in ``prepare_summary.json``.
* **Done work.** When every output exists and the stored ``prepare_opts.json``
  equals the current options, preparation returns the stored
  ``prepare_summary.json`` without rescanning (:func:`load_if_prepared`). The
  options are removed before a preparation starts (:func:`forget_prepared`)
  and written last (:func:`save_prepared`), so an interrupted run is never
  reused.

Authors
 * sb-angcl contributors 2025
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import OrderedDict
from pathlib import Path

from sb_angcl.data.audio_probe import WRONG_RATE_CHOICES
from sb_angcl.data.manifests import format_file_list, write_csv

logger = logging.getLogger(__name__)


#: Version of the manifest format; part of the stored options, so a change
#: here forces a fresh preparation.
PREP_VERSION = 2

OPTS_FILE = "prepare_opts.json"
SUMMARY_FILE = "prepare_summary.json"


def file_digest(path):
    """SHA-256 of a file's content (used to notice an edited trial list).

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
    """Removes the stored options, so an interrupted run is never reused."""
    try:
        os.remove(Path(save_folder) / OPTS_FILE)
    except FileNotFoundError:
        pass


def save_prepared(save_folder, summary, opts):
    """Writes ``prepare_summary.json``, then ``prepare_opts.json`` (last).

    Arguments
    ---------
    opts : dict
        JSON-serialisable options of the call.
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


# At most this many names per category are stored in the summary file.
_MAX_LISTED = 1000


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
        reason : str
            Detail shown next to the file name.
        """
        self.files.setdefault(category, []).append((str(path), reason))
        self.counts[category] = self.counts.get(category, 0) + 1

    def count(self, category, n=1):
        """Counts ``n`` skipped items without naming them."""
        self.counts[category] = self.counts.get(category, 0) + int(n)

    def note(self, category, n=1):
        """Counts ``n`` items kept but changed (resampled, concatenated ...)."""
        self.notes[category] = self.notes.get(category, 0) + int(n)

    def listing(self, category):
        """The skipped files of one kind as ``path (reason)`` strings."""
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
    """
    report.announce("unreadable", "unreadable or empty audio file(s)", fix_unreadable)
    report.announce(
        "wrong_sample_rate",
        f"audio file(s) not at {sample_rate} Hz (on_wrong_sample_rate='skip')",
        "Use on_wrong_sample_rate='resample' to keep them.",
        strict_applies=False,
    )


def missing_items_error(trial_file, problems):
    """Builds the error for trial items that are missing or unusable.

    Arguments
    ---------
    problems : list of str
        ``item (why)`` strings.

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


def log_summary(summary):
    """Logs a prepared corpus's counts in a few readable lines.

    Arguments
    ---------
    summary : dict
        With ``splits`` (name -> :func:`split_stats`), ``trials``,
        ``skipped`` and ``adjusted``.
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


def check_options(on_wrong_sample_rate, dev_fraction, min_duration, sample_rate):
    """Validates the options common to both recipes.

    Arguments
    ---------
    on_wrong_sample_rate : str
        One of :data:`WRONG_RATE_CHOICES`.
    dev_fraction : float
        In [0, 1).
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


def parse_data_folders(data_folder):
    """Turns ``data_folder`` into a list of absolute paths.

    Arguments
    ---------
    data_folder : str, Path or list
        One folder, a comma-separated string of folders, or a list.

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

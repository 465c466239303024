"""The data-preparation skeleton the recipes and ``own_data`` share, its report and saved state.

A recipe's ``*_prepare.py`` knows its corpus layout and hands
:func:`run_preparation` a ``setup`` and a ``build`` step; the checks of its
inputs are here, the rows and CSV files in :mod:`sb_angcl.data.manifests`.
Preparation is skipped when every output exists and the stored
``prepare_opts.json`` equals the current options; the options are removed
before a run and written last, so an interrupted run is never reused.

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
    """SHA-256 of a file's content (used to notice an edited trial list)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _normalise(opts):
    return json.loads(json.dumps({"prep_version": PREP_VERSION, **opts}, default=str))


def load_if_prepared(save_folder, outputs, opts):
    """The stored summary if every output exists and was made with ``opts``, else None.

    Options compare after a JSON round trip (tuples equal lists).

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


def save_prepared(save_folder, summary, opts):
    """Writes ``prepare_summary.json``, then ``prepare_opts.json`` (last)."""
    save_folder = Path(save_folder)
    save_folder.mkdir(parents=True, exist_ok=True)
    for name, content in ((SUMMARY_FILE, summary), (OPTS_FILE, _normalise(opts))):
        tmp = save_folder / (name + ".part")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(content, f, indent=2, default=str)
        os.replace(tmp, save_folder / name)


# At most this many names per category are stored in the summary file.
_MAX_LISTED = 1000


class PrepReport:
    """Collects the files a preparation skipped or changed, and reports each kind once.

    Arguments
    ---------
    strict : bool
        If True, :meth:`announce` raises instead of warning (for the kinds
        where ``strict_applies``).

    Example
    -------
    >>> report = PrepReport()
    >>> report.skip("unreadable", "/d/a.wav", "empty (0 samples)")
    >>> report.count("too_short", 2)
    >>> report.note("resampled")
    >>> report.summary()["skipped"], report.summary()["adjusted"]
    ({'unreadable': 1, 'too_short': 2}, {'resampled': 1})
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
        """Records one skipped file of kind ``category`` (``reason`` shown beside it)."""
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
        """Warns once about the skipped files of ``category`` (raises ``ValueError`` if strict).

        ``what`` describes them ("unreadable audio file(s)"), ``fix`` says what
        the user can do; ``strict_applies=False`` keeps it a warning under
        ``strict``.
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
        """Counts per kind and the first 1000 skipped files per kind.

        ``{"skipped": {kind: n}, "adjusted": {kind: n}, "skipped_files": {kind: [names]}}``.
        """
        return {
            "skipped": dict(self.counts),
            "adjusted": dict(self.notes),
            "skipped_files": {k: self.listing(k)[:_MAX_LISTED] for k in self.files},
        }


def announce_audio_problems(report, sample_rate, fix_unreadable):
    """Announces the unreadable files and those skipped for their sample rate."""
    report.announce("unreadable", "unreadable or empty audio file(s)", fix_unreadable)
    report.announce(
        "wrong_sample_rate",
        f"audio file(s) not at {sample_rate} Hz (on_wrong_sample_rate='skip')",
        "Use on_wrong_sample_rate='resample' to keep them.",
        strict_applies=False,
    )


def missing_items_error(trial_file, problems):
    """The ``ValueError`` for trial items (``item (why)`` strings) missing or unusable.

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
    """``speakers``, ``utterances`` and ``hours`` of manifest rows.

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
    """``total``, ``target`` and ``nontarget`` counts of trial labels (1 target, 0 not)."""
    target = sum(1 for label in labels if label)
    return {"total": len(labels), "target": target, "nontarget": len(labels) - target}


def log_summary(summary):
    """Logs a prepared corpus's counts (splits, trials, skipped, adjusted) in a few lines."""
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
    """The preparation skeleton: options, reuse of done work, build, write, summary.

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
        ``build(context, report) -> (manifests, summary)``: ``manifests`` a
        list of ``(file name, rows, fields)``; the :class:`PrepReport`'s
        counts are added to ``summary``.
    skip_prep : bool
        Do nothing; return the stored summary (``{}`` if none).
    strict : bool
        Passed to the :class:`PrepReport`.

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
        try:
            with open(Path(save_folder) / SUMMARY_FILE, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}
    opts, context = setup()
    save_folder = Path(save_folder)
    summary = load_if_prepared(save_folder, outputs, opts)
    if summary is not None:
        logger.info("%s already prepared in %s with these options; skipping.", corpus, save_folder)
        return summary
    save_folder.mkdir(parents=True, exist_ok=True)
    # Forget the stored options, so that an interrupted run is never reused.
    try:
        os.remove(save_folder / OPTS_FILE)
    except FileNotFoundError:
        pass
    report = PrepReport(strict=strict)
    manifests, summary = build(context, report)
    for name, rows, fields in manifests:
        write_csv(save_folder / name, rows, fields)
    summary = {**summary, **report.summary()}
    save_prepared(save_folder, summary, opts)
    log_summary(summary)
    return summary


def check_options(on_wrong_sample_rate, dev_fraction, min_duration, sample_rate):
    """Validates the options common to every preparation (``ValueError`` naming the bad one).

    Example
    -------
    >>> check_options("ignore", 0.05, 0.5, 16000)
    Traceback (most recent call last):
     ...
    ValueError: on_wrong_sample_rate='ignore' is not one of ('resample', 'error', 'skip').
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
    """``data_folder`` (one folder, comma-separated folders, or a list) as absolute paths."""
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
    """``path``, or a ``FileNotFoundError`` naming ``what`` it is and the expected ``layout``.

    Example
    -------
    >>> require_path(Path("/no/such/wav"), "wav folder", "<root>/wav/...")
    Traceback (most recent call last):
     ...
    FileNotFoundError: wav folder not found: /no/such/wav
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
    """The file ``base / rel`` names, whatever its extension (``x.wav`` listed, ``x.flac`` on disk).

    Returns None when there is none.

    Example
    -------
    >>> import tempfile
    >>> tmp = Path(tempfile.mkdtemp())
    >>> _ = (tmp / "x.flac").write_bytes(b"")
    >>> resolve_audio(tmp, "x.wav").name, resolve_audio(tmp, "y.wav")
    ('x.flac', None)
    """
    stem = os.path.splitext(rel)[0]
    for ext in extensions:
        candidate = Path(base) / (stem + ext)
        if candidate.is_file():
            return candidate
    return None


def parse_trial_label(token, trial_file, line_no):
    """1 for ``1``/``target``, 0 for ``0``/``nontarget``; else a ``ValueError`` naming the line."""
    value = {"1": 1, "0": 0, "target": 1, "nontarget": 0}.get(token.lower())
    if value is None:
        raise ValueError(
            f"{trial_file}, line {line_no}: label {token!r} is not one of "
            "1, 0, target, nontarget."
        )
    return value

"""What a data preparation reports: skipped files, counts and summaries.

:class:`PrepReport` collects the files a preparation skipped or changed and
warns about each kind once (or raises, with ``strict=True``); the rest are the
messages and counts that end up in the log and in ``prepare_summary.json``.

Authors
 * sb-angcl contributors 2025
"""

from __future__ import annotations

import logging
from collections import OrderedDict

logger = logging.getLogger(__name__)


# At most this many names per category are stored in the summary file.
_MAX_LISTED = 1000


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

"""The data-preparation skeleton shared by the VoxCeleb and CN-Celeb recipes.

The recipe scripts (``recipes/*/SpeakerRec/*_prepare.py``) only know their
corpus layout; they hand :func:`run_preparation` a ``setup`` and a ``build``
step. This module holds that skeleton and the checks of a recipe's inputs
(options, data folders, corpus paths, trial labels). The rest lives in:

* :mod:`sb_angcl.data.audio_probe`: probing audio headers, unreadable and
  mis-sampled files (the ``on_wrong_sample_rate`` rule);
* :mod:`sb_angcl.data.manifests`: the CSV columns, manifest rows, label noise, the
  ``min_duration`` rule, the speaker-ID validation split and CSV writing;
* :mod:`sb_angcl.data.prep_report`: the report of skipped files, problem messages
  and the summary counts;
* :mod:`sb_angcl.data.prep_state`: the "already prepared" check.

Their names are importable from here too (``dataprep.split_dev`` ...), as the
recipes use them.

Authors
 * sb-angcl contributors 2025
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sb_angcl.data.audio_probe import (
    PROBE_CHUNK,
    PROBE_THREADS,
    WRONG_RATE_CHOICES,
    AudioInfo,
    filter_probed,
    probe_audio,
    probe_files,
    probe_usable,
    unusable_items,
)
from sb_angcl.data.manifests import (
    ITEM_FIELDS,
    LABEL_NOISE_COLUMNS,
    LABEL_NOISE_FIELDS,
    TRAIN_FIELDS,
    audio_row,
    check_unique_ids,
    drop_short,
    mark_label_noise,
    read_label_noise,
    split_dev,
    write_csv,
)
from sb_angcl.data.prep_report import (
    PrepReport,
    announce_audio_problems,
    format_file_list,
    log_summary,
    missing_items_error,
    split_stats,
    trial_stats,
)
from sb_angcl.data.prep_state import (
    OPTS_FILE,
    PREP_VERSION,
    SUMMARY_FILE,
    file_digest,
    forget_prepared,
    load_if_prepared,
    load_summary,
    save_prepared,
)

__all__ = [
    # this module
    "run_preparation",
    "check_options",
    "parse_data_folders",
    "require_path",
    "resolve_audio",
    "parse_trial_label",
    # sb_angcl.data.audio_probe
    "PROBE_CHUNK",
    "PROBE_THREADS",
    "WRONG_RATE_CHOICES",
    "AudioInfo",
    "filter_probed",
    "probe_audio",
    "probe_files",
    "probe_usable",
    "unusable_items",
    # sb_angcl.data.manifests
    "ITEM_FIELDS",
    "LABEL_NOISE_COLUMNS",
    "LABEL_NOISE_FIELDS",
    "TRAIN_FIELDS",
    "audio_row",
    "check_unique_ids",
    "drop_short",
    "mark_label_noise",
    "read_label_noise",
    "split_dev",
    "write_csv",
    # sb_angcl.data.prep_report
    "PrepReport",
    "announce_audio_problems",
    "format_file_list",
    "log_summary",
    "missing_items_error",
    "split_stats",
    "trial_stats",
    # sb_angcl.data.prep_state
    "OPTS_FILE",
    "PREP_VERSION",
    "SUMMARY_FILE",
    "file_digest",
    "forget_prepared",
    "load_if_prepared",
    "load_summary",
    "save_prepared",
]

logger = logging.getLogger(__name__)


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

"""Skipping done work: the options and summary a finished preparation stores.

When every output exists and the stored ``prepare_opts.json`` equals the
current options, preparation returns the stored ``prepare_summary.json``
without rescanning (:func:`load_if_prepared`). The options are removed before
a preparation starts (:func:`forget_prepared`) and written last
(:func:`save_prepared`), so an interrupted run is never reused.

Authors
 * sb-angcl contributors 2025
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

#: Version of the manifest format; part of the stored options, so a change
#: here forces a fresh preparation.
PREP_VERSION = 2

OPTS_FILE = "prepare_opts.json"
SUMMARY_FILE = "prepare_summary.json"


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

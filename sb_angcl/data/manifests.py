"""The manifests a data preparation writes: columns, rows, splits, CSV files.

Item CSVs (train, dev, enrol, test) have the columns :data:`ITEM_FIELDS`, one
row per utterance (or per run of utterances joined by CN-Celeb's
``short_utterance_rule="concat"``): ``start = 0``, ``stop`` = samples at the
file's own rate, ``duration`` in seconds, ``genre``/``language`` empty where
the corpus does not say. ``session`` is the recording the utterance comes from
(VoxCeleb: the video; CN-Celeb: ``<genre>-<ss>``; joined rows list theirs
joined by ``+``); the sampler reads this column, never the paths.
``sample_rate`` is the file's rate: where it differs from the recipe's, the
loader resamples. ``train.csv`` and ``dev.csv`` add :data:`LABEL_NOISE_FIELDS`
(the true speaker, and 1 where the corpus's label-noise list says the file is
filed under another speaker). ``trials.csv`` has ``enrol,test,label`` plus
condition columns (``enrol_<x>,test_<x>``).

Authors
 * sb-angcl contributors 2025
"""

from __future__ import annotations

import csv
import logging
import os
import random
from collections import OrderedDict
from pathlib import Path

logger = logging.getLogger(__name__)


#: Columns of every item CSV (train, dev, enrol, test).
ITEM_FIELDS = [
    "ID", "duration", "wav", "start", "stop", "spk_id", "genre", "language", "session", "sample_rate",
]

#: Extra columns of ``train.csv`` and ``dev.csv`` (label noise).
LABEL_NOISE_FIELDS = ["true_spk_id", "label_noise"]

#: Columns of ``train.csv`` and ``dev.csv``.
TRAIN_FIELDS = ITEM_FIELDS + LABEL_NOISE_FIELDS

#: Columns of a label-noise list (:func:`read_label_noise`).
LABEL_NOISE_COLUMNS = ("path", "given_speaker", "true_speaker")


def check_unique_ids(rows, what):
    """Raises ``ValueError`` naming the IDs that occur more than once in manifest ``what``.

    Example
    -------
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
    """One manifest row (the keys of :data:`ITEM_FIELDS`) covering a whole probed file.

    Example
    -------
    >>> from types import SimpleNamespace  # an AudioInfo of sb_angcl.data.audio_probe
    >>> info = SimpleNamespace(path="/d/u1.wav", frames=24000, sample_rate=16000, duration=1.5)
    >>> row = audio_row("u1", info, "s1")
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


def read_label_noise(path):
    """Reads a label-noise list (``path,given_speaker,true_speaker``): ``path -> true speaker``.

    The built-in corpus writes it as ``meta/label_noise.csv``; paths are like
    the manifests' IDs and start with their ``given_speaker`` folder. Returns
    None when the file does not exist.

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
    """Adds ``true_spk_id`` and ``label_noise`` to training rows (in place) and returns them.

    ``noise`` is ``ID -> true speaker`` (:func:`read_label_noise`); None or
    empty for a clean corpus.

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


def drop_short(rows, min_duration, report=None):
    """The rows at least ``min_duration`` seconds long; ``report`` counts the others (``too_short``).

    Enrolment and test items are never dropped for being short; training
    items shorter than the crop are kept (the loader repeat-pads them).
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
    """``(train, dev)``: a seeded fraction of each training speaker's utterances held out.

    A speaker with ``n >= min_utterances`` utterances gives
    ``max(1, round(dev_fraction * n))`` (at most ``n - 1``) to ``dev``, chosen
    from ``seed``, the speaker and its IDs alone (not the order of ``rows``),
    so every validation speaker also trains, as speaker-ID error needs. Both
    lists keep the order of ``rows``.

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


def _format_value(value):
    if isinstance(value, float):
        return f"{value:.5f}"
    return value


def write_csv(path, rows, fields):
    """Writes rows to a CSV file atomically; missing keys empty, floats with 5 decimals.

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


def format_file_list(items, limit=10):
    """The first ``limit`` items, one per indented line, then how many there are in all.

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

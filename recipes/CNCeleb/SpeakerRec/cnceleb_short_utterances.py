"""CN-Celeb's short training utterances: ``short_utterance_rule`` of ``cnceleb_prepare.py``.

CN-Celeb has many short utterances. :func:`apply_short_rule` applies the rule:
``"concat"`` joins consecutive ones of a speaker and genre
(:func:`group_consecutive`) into new wav files (:func:`concatenate_audio`,
:func:`concatenate_many`), ``"drop"`` leaves them out, ``"keep"`` does nothing.

The recipe folder is on ``sys.path`` when ``train.py`` runs, so
``cnceleb_prepare.py`` imports this file as a plain module.

Authors
 * sb-angcl contributors 2025
"""

import concurrent.futures
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from sb_angcl.data import audio_probe

#: Values of ``short_utterance_rule``.
SHORT_RULES = ("concat", "drop", "keep")


def group_consecutive(rows, min_duration, key):
    """Groups short utterances with their neighbours until long enough.

    Rows are grouped by ``key(row)`` (e.g. speaker and genre) and sorted by
    ``ID`` within a group. Walking in that order, an utterance of at least
    ``min_duration`` seconds stands alone; a shorter one starts a run that
    takes the following utterances until the run reaches ``min_duration``.
    A run still too short at the end of its group joins the previous item of
    the group; if the group has no other item, the run is kept as it is
    (the whole group is shorter than ``min_duration``).

    Arguments
    ---------
    rows : list of dict
        Rows with ``ID`` and ``duration``.
    min_duration : float
        Target duration in seconds.
    key : callable
        Maps a row to its group (only rows with equal keys are joined).

    Returns
    -------
    list of list of dict
        The items, ordered by group key then ID; a single-row item is an
        utterance kept unchanged.

    Example
    -------
    >>> rows = [{"ID": i, "duration": d, "g": "x"}
    ...         for i, d in zip("abcde", [3.0, 0.5, 1.0, 1.0, 0.4])]
    >>> groups = group_consecutive(rows, 2.0, key=lambda r: r["g"])
    >>> [[r["ID"] for r in g] for g in groups]
    [['a'], ['b', 'c', 'd', 'e']]
    """
    by_key = OrderedDict()
    for row in rows:
        by_key.setdefault(key(row), []).append(row)
    items = []
    for group_key in sorted(by_key):
        group_items = []
        run, run_duration = [], 0.0
        for row in sorted(by_key[group_key], key=lambda r: r["ID"]):
            if not run and row["duration"] >= min_duration:
                group_items.append([row])
                continue
            run.append(row)
            run_duration += row["duration"]
            if run_duration >= min_duration:
                group_items.append(run)
                run, run_duration = [], 0.0
        if run:
            if group_items:
                group_items[-1] = group_items[-1] + run
            else:
                group_items.append(run)
        items.extend(group_items)
    return items


def concatenate_audio(sources, dest, sample_rate):
    """Writes the concatenation of several audio files as one mono wav.

    16-bit mono sources at ``sample_rate`` are copied bit-exactly; sources
    at another rate are resampled (``torchaudio``) and several channels are
    averaged. The result is 16-bit PCM at ``sample_rate``.

    Arguments
    ---------
    sources : list of str
        Audio files, concatenated in this order.
    dest : str or Path
        Output wav file (its folder is created).
    sample_rate : int
        Output rate.

    Returns
    -------
    int
        Number of samples written.

    Example
    -------
    >>> import tempfile, numpy, soundfile
    >>> tmp = tempfile.mkdtemp()
    >>> soundfile.write(f"{tmp}/a.wav", numpy.full(100, 0.5), 16000)
    >>> soundfile.write(f"{tmp}/b.flac", numpy.full(50, -0.5), 16000)
    >>> concatenate_audio([f"{tmp}/a.wav", f"{tmp}/b.flac"], f"{tmp}/o/ab.wav", 16000)
    150
    """
    parts = []
    for src in sources:
        with sf.SoundFile(src) as f:
            rate, channels, subtype = f.samplerate, f.channels, f.subtype
        if rate == sample_rate and channels == 1 and subtype == "PCM_16":
            # 16-bit mono at the right rate: copy the samples bit-exactly.
            parts.append(sf.read(src, dtype="int16")[0])
            continue
        data = sf.read(src, dtype="float32", always_2d=True)[0].mean(axis=1)
        if rate != sample_rate:
            import torch
            import torchaudio

            data = torchaudio.functional.resample(
                torch.from_numpy(data), rate, sample_rate
            ).numpy()
        parts.append(data)
    if parts and all(p.dtype == np.int16 for p in parts):
        audio = np.concatenate(parts)
    else:
        audio = np.concatenate(
            [p.astype("float32") / 32768 if p.dtype == np.int16 else p for p in parts]
            or [np.zeros(0, dtype="float32")]
        )
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    sf.write(str(tmp), audio, sample_rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, dest)
    return len(audio)


def _concatenate_job(job, sample_rate):
    sources, dest, expected = job
    if expected is not None and Path(dest).is_file():
        info = audio_probe.probe_audio(dest)
        if info.ok and info.frames == expected and info.sample_rate == sample_rate:
            return expected  # written by an earlier, interrupted run
    try:
        return concatenate_audio(sources, dest, sample_rate)
    except Exception as err:  # noqa: BLE001 (a source that fails to decode)
        return err


def concatenate_many(jobs, sample_rate, num_threads=None, desc="Concatenating"):
    """Runs :func:`concatenate_audio` for many groups, in a thread pool.

    A destination that already exists with the expected number of samples
    is kept (so an interrupted preparation resumes cheaply).

    Arguments
    ---------
    jobs : list of tuple
        ``(sources, dest, expected_frames)``; ``expected_frames`` may be None
        (then the file is always rewritten).
    sample_rate : int
        Output rate.
    num_threads : int, optional
        Worker threads (default :data:`sb_angcl.data.audio_probe.PROBE_THREADS`).
    desc : str
        Label of the progress bar.

    Returns
    -------
    list
        Per job, the number of samples written, or the exception that
        stopped it.

    Example
    -------
    >>> import tempfile, numpy, soundfile
    >>> tmp = tempfile.mkdtemp()
    >>> soundfile.write(f"{tmp}/a.wav", numpy.zeros(100), 16000)
    >>> _ = open(f"{tmp}/bad.wav", "w").write("text")
    >>> out = concatenate_many([([f"{tmp}/a.wav"] * 2, f"{tmp}/aa.wav", 200),
    ...                         ([f"{tmp}/bad.wav"], f"{tmp}/b.wav", None)], 16000)
    >>> out[0], type(out[1]).__name__
    (200, 'LibsndfileError')
    """
    if not jobs:
        return []
    results = [None] * len(jobs)
    pool = concurrent.futures.ThreadPoolExecutor(num_threads or audio_probe.PROBE_THREADS)
    with pool, tqdm(total=len(jobs), desc=desc, unit="file") as bar:
        futures = {
            pool.submit(_concatenate_job, job, sample_rate): i
            for i, job in enumerate(jobs)
        }
        for future in concurrent.futures.as_completed(futures):
            results[futures[future]] = future.result()
            bar.update(1)
    return results


def apply_short_rule(rows, rule, target, sample_rate, out_dir, report):
    """Applies ``short_utterance_rule`` to the training rows.

    Arguments
    ---------
    rows : list of dict
        Training rows (with the private ``_set`` key: the CN-Celeb subset).
    rule : str
        One of :data:`SHORT_RULES` (see the module docstring).
    target : float
        ``concat_min_duration`` (s).
    sample_rate : int
        Rate of the concatenated audio.
    out_dir : Path
        Where concatenated runs are written (``<set>/<spk>/<name>.wav``).
    report : sb_angcl.data.preparation.PrepReport
        Counts dropped and concatenated files, and unreadable sources.

    Returns
    -------
    list of dict
        The rows after the rule; a concatenated run is one row.

    Example
    -------
    >>> rows = [{"duration": 1.0}, {"duration": 3.0}]
    >>> from sb_angcl.data.preparation import PrepReport
    >>> report = PrepReport()
    >>> apply_short_rule(rows, "drop", 2.0, 16000, None, report)
    [{'duration': 3.0}]
    """
    if rule == "keep":
        return rows
    if rule == "drop":
        kept = [r for r in rows if r["duration"] >= target]
        report.count("short_dropped", len(rows) - len(kept))
        return kept
    groups = group_consecutive(
        rows, target, key=lambda r: (r["_set"], r["spk_id"], r["genre"], r["true_spk_id"])
    )
    jobs, new_rows = [], []
    for group in groups:
        if len(group) == 1:
            new_rows.append(group[0])
            continue
        spk = group[0]["spk_id"]
        stems = [r["ID"].split("/", 1)[1][: -len(".wav")] for r in group]
        name = "+".join(stems)
        if len(name) > 180:
            name = f"{stems[0]}+{len(stems) - 2}more+{stems[-1]}"
        dest = out_dir / group[0]["_set"] / spk / f"{name}.wav"
        expected = None
        if all(int(r["sample_rate"]) == sample_rate for r in group):
            expected = sum(int(r["stop"]) for r in group)
        jobs.append(([r["wav"] for r in group], dest, expected))
        new_rows.append(
            {
                "ID": f"{spk}/{'+'.join(stems)}.wav",
                "wav": str(dest),
                "spk_id": spk,
                "genre": group[0]["genre"],
                "language": "",
                "session": "+".join(OrderedDict.fromkeys(r["session"] for r in group)),
                "true_spk_id": group[0]["true_spk_id"],
                "label_noise": group[0]["label_noise"],
                "_sources": group,
            }
        )
    results = concatenate_many(
        jobs, sample_rate, desc="Concatenating short utterances"
    )
    out = []
    results = iter(results)
    for row in new_rows:
        if "_sources" not in row:
            out.append(row)
            continue
        sources = row.pop("_sources")
        frames = next(results)
        if isinstance(frames, Exception):
            for src in sources:
                report.skip("unreadable", src["wav"], f"while concatenating: {frames}")
            continue
        report.note("concatenated_sources", len(sources))
        report.note("concatenated_outputs")
        row.update(
            duration=frames / sample_rate,
            start=0,
            stop=frames,
            sample_rate=sample_rate,
        )
        out.append(row)
    return out

"""Audio probed before it is listed in a manifest: readable, how long, at which rate.

:func:`probe_audio` opens each file with :class:`soundfile.SoundFile` and
reads its last sample: files libsndfile cannot open, empty ones and FLAC files
cut short (their header keeps the full length; the seek fails) are
*unreadable*. A WAV cut short is not: libsndfile reports the true length.
Damage inside a compressed file is left to the loader. ``on_wrong_sample_rate``
(:func:`filter_probed`) keeps (``"resample"``), skips or refuses files not at
the recipe's rate.

Authors
 * sb-angcl contributors 2025
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections import OrderedDict
from dataclasses import dataclass

import soundfile as sf
from tqdm import tqdm

from sb_angcl.data.manifests import format_file_list

logger = logging.getLogger(__name__)


#: The audio files the recipes read (their names, lower-cased, end so).
AUDIO_EXTENSIONS = (".wav", ".flac")

#: Accepted values of ``on_wrong_sample_rate``.
WRONG_RATE_CHOICES = ("resample", "error", "skip")

#: Threads used to probe audio headers (I/O bound; libsndfile releases the GIL).
PROBE_THREADS = 16

#: Files handed to one probing task.
PROBE_CHUNK = 256


@dataclass(frozen=True)
class AudioInfo:
    """What the probe learnt about one audio file (``error``: why it is unusable, or None).

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
    """The :class:`AudioInfo` of one file, from its header and last sample (never raises).

    Example
    -------
    >>> import tempfile
    >>> path = f"{tempfile.mkdtemp()}/b.wav"
    >>> _ = open(path, "w").write("not audio")
    >>> probe_audio(path).error
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
    """The :class:`AudioInfo` of each path, in order (a thread pool, with a progress bar)."""
    paths = [str(p) for p in paths]
    if not paths:
        return []
    num_threads = num_threads or PROBE_THREADS
    chunks = [paths[i : i + PROBE_CHUNK] for i in range(0, len(paths), PROBE_CHUNK)]
    results = [None] * len(chunks)
    pool = concurrent.futures.ThreadPoolExecutor(num_threads)
    with pool, tqdm(total=len(paths), desc=desc, unit="file") as bar:
        futures = {pool.submit(_probe_chunk, chunk): i for i, chunk in enumerate(chunks)}
        for future in concurrent.futures.as_completed(futures):
            i = futures[future]
            results[i] = future.result()
            bar.update(len(results[i]))
    return [info for chunk in results for info in chunk]


def filter_probed(infos, report, sample_rate, on_wrong_sample_rate):
    """``path -> AudioInfo`` of the usable files (readable; at ``sample_rate`` or resampled).

    Unreadable files go to ``report`` (``unreadable``; the caller announces
    them). Files at another rate are kept (``"resample"``, noted as
    ``resampled``), skipped (``"skip"``, ``wrong_sample_rate``) or named in a
    ``ValueError`` (``"error"``).

    Example
    -------
    >>> from sb_angcl.data.preparation import PrepReport
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
    listing = format_file_list([f"{i.path} ({i.sample_rate} Hz)" for i in wrong])
    if wrong and on_wrong_sample_rate == "error":
        raise ValueError(
            f"{len(wrong)} audio file(s) are not at {sample_rate} Hz:\n"
            f"{listing}\n"
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
            len(wrong), sample_rate, listing,
        )
    return usable


def probe_usable(paths, desc, report, sample_rate, on_wrong_sample_rate):
    """``(usable, info_by_path)``: :func:`probe_files` then :func:`filter_probed`.

    ``usable`` maps the usable paths, ``info_by_path`` every probed path, to
    their :class:`AudioInfo`.
    """
    infos = probe_files(paths, desc=desc)
    usable = filter_probed(infos, report, sample_rate, on_wrong_sample_rate)
    return usable, {info.path: info for info in infos}


def unusable_items(items, usable, info_by_path):
    """``"<name> (<reason>)"`` per evaluation item ``(name, path)`` left out by the probe.

    For :func:`~sb_angcl.data.preparation.missing_items_error`.

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

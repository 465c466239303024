"""Audio probed before it is listed in a manifest: readable, how long, at which rate.

Audio files are probed before they are listed:

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
  (counted under ``skipped``), ``"error"`` raises (:func:`filter_probed`).

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


#: Accepted values of ``on_wrong_sample_rate``.
WRONG_RATE_CHOICES = ("resample", "error", "skip")

#: Threads used to probe audio headers (I/O bound; libsndfile releases the GIL).
PROBE_THREADS = 16

#: Files handed to one probing task.
PROBE_CHUNK = 256


@dataclass(frozen=True)
class AudioInfo:
    """What the probe learnt about one audio file.

    Arguments
    ---------
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


def filter_probed(infos, report, sample_rate, on_wrong_sample_rate):
    """Drops unreadable files and applies the sample-rate policy.

    Unreadable files are recorded in ``report`` (category ``unreadable``);
    the caller announces them once with
    :meth:`~sb_angcl.data.preparation.PrepReport.announce`. Files at another rate
    are kept (``"resample"``, category ``resampled`` counted),
    skipped (``"skip"``, category ``wrong_sample_rate``) or make this function
    raise (``"error"``).

    Arguments
    ---------
    report : PrepReport
        Where skipped files are recorded.
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


def probe_usable(paths, desc, report, sample_rate, on_wrong_sample_rate):
    """Probes ``paths`` and keeps the usable ones (:func:`probe_files`, :func:`filter_probed`).

    Arguments
    ---------
    report : PrepReport
        Collects unreadable and mis-sampled files.
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
    >>> from sb_angcl.data.preparation import PrepReport
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
        ``"<name> (<reason>)"`` per unusable item, for
        :func:`~sb_angcl.data.preparation.missing_items_error`.

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

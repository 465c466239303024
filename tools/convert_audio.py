"""Convert VoxCeleb2 (m4a/AAC) to 16 kHz mono WAV in the VoxCeleb1 layout.

VoxCeleb2 is distributed as ``dev/aac/<speaker>/<video>/<utt>.m4a``; the
recipes read ``<root>/wav/<speaker>/<video>/<utt>.wav``. This runs ``ffmpeg``
on several files at once, shows a progress bar, and can be stopped and rerun
at any time: a finished file is never converted again, and each output is
written under a temporary name and renamed only once ffmpeg succeeded, so an
interrupted run leaves no half-written WAV.

Usage::

    python tools/convert_audio.py /data/voxceleb2 /data/VoxCeleb2 --jobs 8

then train on both corpora with
``--data_folder=[/data/VoxCeleb1,/data/VoxCeleb2]``.

Authors
 * sb-angcl contributors
"""

import argparse
import logging
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

logger = logging.getLogger(__name__)


def wav_target(m4a_path, src_root, dst_root):
    """Where the WAV of one m4a file goes.

    The part of the path after the last ``aac`` folder (or the whole path
    below ``src_root``) is kept under ``dst_root/wav``.

    Arguments
    ---------
    src_root : str
        Root of the m4a tree.
    dst_root : str
        Root of the WAV tree.

    Example
    -------
    >>> wav_target("/v2/dev/aac/id00012/abc/00001.m4a", "/v2", "/out")
    '/out/wav/id00012/abc/00001.wav'
    """
    parts = os.path.relpath(m4a_path, src_root).split(os.sep)
    if "aac" in parts[:-1]:
        parts = parts[len(parts) - parts[::-1].index("aac"):]
    return os.path.join(dst_root, "wav", *parts[:-1], os.path.splitext(parts[-1])[0] + ".wav")


def find_m4a(src_root):
    """All ``.m4a`` files below ``src_root``, sorted.

    Arguments
    ---------
    src_root : str
        Root of the m4a tree.
    """
    if not os.path.isdir(src_root):
        raise FileNotFoundError(
            f"{src_root} does not exist: give the folder holding VoxCeleb2's dev/aac/ (or aac/)."
        )
    found = []
    for dirpath, _, names in os.walk(src_root):
        found.extend(os.path.join(dirpath, n) for n in names if n.lower().endswith(".m4a"))
    return sorted(found)


def _convert_one(src, dst, ffmpeg, sample_rate):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    partial = dst + ".partial.wav"
    cmd = [ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-i", src, "-ac", "1",
           "-ar", str(sample_rate), "-c:a", "pcm_s16le", partial]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not os.path.isfile(partial) or os.path.getsize(partial) <= 44:
        if os.path.exists(partial):
            os.remove(partial)
        return f"{src}: {proc.stderr.strip()[-300:] or 'no output'}"
    os.replace(partial, dst)
    return None


def convert_m4a_tree(src_root, dst_root, jobs=4, sample_rate=16000, ffmpeg="ffmpeg", progress=True):
    """Convert every m4a below ``src_root``; skip those already converted.

    Arguments
    ---------
    src_root : str
        Root of the m4a tree (e.g. the unpacked VoxCeleb2).
    dst_root : str
        Root of the WAV tree (``dst_root/wav/<spk>/<video>/<utt>.wav``).

    Returns
    -------
    dict
        ``converted``, ``skipped`` (already done) and ``failed`` (list of
        ``"file: reason"``).

    Example
    -------
    >>> import tempfile
    >>> convert_m4a_tree(tempfile.mkdtemp(), tempfile.mkdtemp())
    {'converted': 0, 'skipped': 0, 'failed': []}
    """
    files = find_m4a(src_root)
    todo = [(f, wav_target(f, src_root, dst_root)) for f in files]
    skipped = sum(1 for _, dst in todo if os.path.isfile(dst))
    todo = [(src, dst) for src, dst in todo if not os.path.isfile(dst)]
    if todo and shutil.which(ffmpeg) is None:
        raise FileNotFoundError(
            f"{ffmpeg} not found: install ffmpeg (e.g. apt-get install ffmpeg) or pass "
            "--ffmpeg /path/to/ffmpeg."
        )
    failed = []
    with ThreadPoolExecutor(max_workers=max(int(jobs), 1)) as pool:
        results = pool.map(lambda pair: _convert_one(*pair, ffmpeg, sample_rate), todo)
        for error in tqdm(results, total=len(todo), disable=not progress, unit="file",
                          desc="m4a -> wav"):
            if error:
                failed.append(error)
    if failed:
        logger.warning("%d file(s) failed to convert (rerun to retry):\n%s", len(failed),
                       "\n".join(failed[:20]))
    return {"converted": len(todo) - len(failed), "skipped": skipped, "failed": failed}


def main(argv=None):
    """Command line: ``python tools/convert_audio.py SRC DST [--jobs N]``.

    Returns
    -------
    int
        Exit status (1 when some files failed).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="VoxCeleb2 root (holding dev/aac/ or aac/)")
    parser.add_argument("dst", help="output root; WAVs go to DST/wav/<spk>/<video>/<utt>.wav")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 4)
    parser.add_argument("--sample_rate", type=int, default=16000)
    parser.add_argument("--ffmpeg", default="ffmpeg")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    result = convert_m4a_tree(args.src, args.dst, args.jobs, args.sample_rate, args.ffmpeg)
    print(f"converted {result['converted']}, already done {result['skipped']}, "
          f"failed {len(result['failed'])}")
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""Augmentation: MUSAN noise and RIRS_NOISES reverberation from local folders, the domain chosen.

The recipe YAMLs write every augmentation that runs (SpeechBrain's
``AddNoise`` with :class:`FileNoise`, ``AddReverb``: the Kaldi/WeSpeaker
settings). Nothing is downloaded: ``musan_folder`` and ``rir_folder`` name
local copies in their standard layouts (``null`` turns each off), which
:func:`prepare_augmentation` lists in CSVs; long MUSAN files are listed as
segments, so a noise draw reads a few seconds, not a whole song.

Authors
 * sb-angcl contributors
"""

import csv
import json
import logging
import os

import soundfile as sf
import torch
from speechbrain.augment.augmenter import Augmenter

from sb_angcl.data.audio_probe import AUDIO_EXTENSIONS
from sb_angcl.data.dataio import load_segment

logger = logging.getLogger(__name__)

#: The CSVs :func:`prepare_augmentation` writes, by category (the YAMLs name them).
LIST_FILES = {
    "noise": "musan_noise.csv",
    "speech": "musan_speech.csv",
    "music": "musan_music.csv",
    "rir": "rirs.csv",
}
MUSAN_CATEGORIES = ("noise", "speech", "music")

MUSAN_LAYOUT = "musan_folder/{noise,speech,music}/**/*.wav (the MUSAN corpus as unpacked)"
RIR_LAYOUT = (
    "rir_folder/simulated_rirs/**/*.wav and/or rir_folder/real_rirs_isotropic_noises/*.wav "
    "(the RIRS_NOISES archive as unpacked)"
)


def _audio_files(folder):
    found = []
    for dirpath, _, names in os.walk(folder):
        found.extend(os.path.join(dirpath, n) for n in names if n.lower().endswith(AUDIO_EXTENSIONS))
    return sorted(found)


def find_musan(musan_folder):
    """Audio files of each MUSAN category: ``{"noise": [...], "speech": [...], "music": [...]}``."""
    if not os.path.isdir(musan_folder):
        raise FileNotFoundError(
            f"musan_folder {musan_folder} does not exist; expected {MUSAN_LAYOUT}. Fix the "
            "path, or set musan_folder: null to train without noise."
        )
    files = {c: _audio_files(os.path.join(musan_folder, c)) for c in MUSAN_CATEGORIES}
    empty = [c for c, found in files.items() if not found]
    if empty:
        raise FileNotFoundError(
            f"musan_folder {musan_folder} has no audio in {', '.join(empty)}/; expected "
            f"{MUSAN_LAYOUT}."
        )
    return files


def find_rirs(rir_folder):
    """Mono impulse responses of RIRS_NOISES: simulated, then real (not the isotropic noises)."""
    if not os.path.isdir(rir_folder):
        raise FileNotFoundError(
            f"rir_folder {rir_folder} does not exist; expected {RIR_LAYOUT}. Fix the path, "
            "or set rir_folder: null to train without reverberation."
        )
    files = _audio_files(os.path.join(rir_folder, "simulated_rirs"))
    real = _audio_files(os.path.join(rir_folder, "real_rirs_isotropic_noises"))
    files += [f for f in real if "noise" not in os.path.basename(f).lower()]
    mono = [f for f in files if sf.info(f).channels == 1]
    if len(mono) < len(files):
        logger.info("rir_folder: %d multi-channel RIR(s) left out.", len(files) - len(mono))
    if not mono:
        raise FileNotFoundError(
            f"rir_folder {rir_folder} holds no impulse responses; expected {RIR_LAYOUT}."
        )
    return mono


def _write_segments(path, files, segment_seconds):
    """CSV ``ID,duration,wav,start,stop``: each file cut into segments."""
    with open(path, "w", newline="", encoding="utf-8") as fout:
        writer = csv.writer(fout)
        writer.writerow(["ID", "duration", "wav", "start", "stop", "sample_rate"])
        for i, wav in enumerate(files):
            info = sf.info(wav)
            seg = int(segment_seconds * info.samplerate)
            for j, start in enumerate(range(0, max(info.frames, 1), seg)):
                stop = min(start + seg, info.frames)
                if stop - start < 0.5 * info.samplerate and j > 0:
                    continue  # a short tail of a long file
                writer.writerow([f"{i}_{j}", (stop - start) / info.samplerate, wav, start,
                                 stop, info.samplerate])


def prepare_augmentation(lists_folder, musan_folder=None, rir_folder=None, segment_seconds=10.0):
    """Writes the :data:`LIST_FILES` of the folders that are set; returns their paths by category.

    Skipped when done for the same folders; ``segment_seconds`` is the
    longest MUSAN segment listed.

    Example
    -------
    >>> prepare_augmentation("/unused")
    {}
    """
    if not musan_folder and not rir_folder:
        return {}
    os.makedirs(lists_folder, exist_ok=True)
    wanted = {"musan_folder": musan_folder and os.path.abspath(musan_folder),
              "rir_folder": rir_folder and os.path.abspath(rir_folder),
              "segment_seconds": segment_seconds}
    categories = (MUSAN_CATEGORIES if musan_folder else ()) + (("rir",) if rir_folder else ())
    paths = {c: os.path.join(lists_folder, LIST_FILES[c]) for c in categories}
    marker = os.path.join(lists_folder, "prepared.json")
    if os.path.isfile(marker) and all(map(os.path.isfile, paths.values())):
        with open(marker, encoding="utf-8") as fin:
            if json.load(fin) == wanted:
                logger.info("Noise/RIR lists in %s are up to date; skipping.", lists_folder)
                return paths
    if musan_folder:
        for category, files in find_musan(musan_folder).items():
            _write_segments(paths[category], files, segment_seconds)
            logger.info("MUSAN %s: %d files listed in %s", category, len(files), paths[category])
    if rir_folder:
        rirs = find_rirs(rir_folder)
        with open(paths["rir"], "w", newline="", encoding="utf-8") as fout:
            writer = csv.writer(fout)
            # SpeechBrain's extended CSV format, which AddReverb reads.
            writer.writerow(["ID", "duration", "wav", "wav_format", "wav_opts"])
            for i, wav in enumerate(rirs):
                info = sf.info(wav)
                writer.writerow([f"rir{i}", info.frames / info.samplerate, wav,
                                 os.path.splitext(wav)[1][1:].lower(), ""])
        logger.info("RIRs: %d listed in %s", len(rirs), paths["rir"])
    with open(marker, "w", encoding="utf-8") as fout:
        json.dump(wanted, fout)
    logger.info("Noise/reverberation augmentation on: %s", ", ".join(sorted(paths)))
    return paths


class FileNoise:
    """Noise drawn from a list of :func:`prepare_augmentation`, for ``AddNoise(noise_funct=...)``.

    Each utterance gets a random window of a random segment (repeated when
    shorter), or the sum of ``mix = (low, high)`` windows (babble), drawn with
    torch's global generator. The list is read at the first draw (the YAML
    builds this before ``train.py`` writes it).
    """

    def __init__(self, csv_path, sample_rate=16000, mix=(1, 1)):
        self.csv_path = csv_path
        self.sample_rate = sample_rate
        self.mix = tuple(mix)
        self.rows = None

    def _window(self, length):
        wav, start, stop = self.rows[int(torch.randint(len(self.rows), (1,)))]
        noise = load_segment(wav, start, stop, self.sample_rate)
        if noise.shape[0] < length:
            noise = noise.repeat(-(-length // max(noise.shape[0], 1)))
        offset = int(torch.randint(noise.shape[0] - length + 1, (1,)))
        return noise[offset : offset + length]

    def __call__(self, waveforms):
        """Noise shaped like ``waveforms`` (``[batch, time]``)."""
        if self.rows is None:
            with open(self.csv_path, newline="", encoding="utf-8") as fin:
                self.rows = [(r["wav"], int(r["start"]), int(r["stop"])) for r in csv.DictReader(fin)]
            if not self.rows:
                raise ValueError(f"{self.csv_path} lists no noise; rerun with the MUSAN folder filled.")
        batch, length = waveforms.shape[0], waveforms.shape[1]
        out = torch.zeros(batch, length)
        for b in range(batch):
            count = int(torch.randint(self.mix[0], self.mix[1] + 1, (1,)))
            for _ in range(count):
                out[b] += self._window(length)
        return out.to(waveforms.device, waveforms.dtype)


def augmenter_of_enabled(augmentations, enabled, **augmenter_kwargs):
    """SpeechBrain's ``Augmenter`` of the ``augmentations`` whose ``enabled`` entry is truthy, or None.

    The YAML gives the folders as ``enabled``, so a ``null`` folder turns its
    augmentations off.

    Example
    -------
    >>> from speechbrain.augment.time_domain import DropChunk, DropFreq
    >>> augmenter_of_enabled([DropFreq(), DropChunk()], [None, None]) is None
    True
    >>> list(augmenter_of_enabled([DropFreq(), DropChunk()], ["/musan", None]).augmentations)
    ['DropFreq0']
    """
    chosen = [a for a, on in zip(augmentations, enabled) if on]
    if len(enabled) != len(augmentations):
        raise ValueError("augmenter_of_enabled: one `enabled` entry per augmentation")
    return Augmenter(augmentations=chosen, **augmenter_kwargs) if chosen else None


class ChainedAugment(torch.nn.Module):
    """``first`` then ``second`` (each an Augmenter-like module, or None: skipped).

    Example
    -------
    >>> chain = ChainedAugment(None, None)
    >>> chain(torch.ones(1, 4), torch.ones(1))[0]
    tensor([[1., 1., 1., 1.]])
    """

    def __init__(self, first, second):
        super().__init__()
        self.first, self.second = first, second

    def forward(self, wavs, lens):
        """Both augmentations in turn; returns ``(wavs, lens)``."""
        for module in (self.first, self.second):
            if module is not None:
                wavs, lens = module(wavs, lens)
        return wavs, lens

    def replicate_labels(self, labels):
        """Labels replicated as both augmentations did."""
        for module in (self.first, self.second):
            if module is not None and hasattr(module, "replicate_labels"):
                labels = module.replicate_labels(labels)
        return labels


#: Values of the YAML's ``augmentation`` and the hparam each one uses.
AUGMENTATION_DOMAINS = {"waveform": "wav_augment", "features": "feat_augment", "none": None}


def select_augmenters(choice, hparams):
    """``(wav_augment, feat_augment)`` of a training step for the YAML's ``augmentation``.

    ``waveform`` takes the hparams' ``wav_augment``, ``features`` their
    ``feat_augment`` (masks on the normalised filterbanks), ``none`` neither.

    Example
    -------
    >>> from types import SimpleNamespace
    >>> select_augmenters("features", SimpleNamespace(feat_augment="F"))
    (None, 'F')
    >>> select_augmenters("waveform", SimpleNamespace(feat_augment="F"))
    Traceback (most recent call last):
     ...
    ValueError: augmentation: waveform needs `wav_augment` in the YAML
    """
    if choice not in AUGMENTATION_DOMAINS:
        raise ValueError(
            f"augmentation must be waveform, features or none, got {choice!r} "
            "(--augmentation=features)"
        )
    key = AUGMENTATION_DOMAINS[choice]
    if key is None:
        return None, None
    module = getattr(hparams, key, None)
    if module is None:
        raise ValueError(f"augmentation: {choice} needs `{key}` in the YAML")
    return (module, None) if choice == "waveform" else (None, module)

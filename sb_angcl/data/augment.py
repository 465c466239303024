"""Noise (MUSAN) and reverberation (RIRS_NOISES) augmentation from local folders.

The anchors of the paper's system (SpeechBrain's ECAPA recipe, WeSpeaker, the
authors' code) all train with MUSAN noise and simulated room impulse
responses. Nothing is downloaded here: the YAML keys ``musan_folder`` and
``rir_folder`` name local copies in their standard layouts (``null``, the
default, turns each off)::

    musan_folder/noise/**.wav   musan_folder/speech/**.wav   musan_folder/music/**.wav
    rir_folder/simulated_rirs/**.wav   rir_folder/real_rirs_isotropic_noises/*.wav

:func:`prepare_augmentation` lists them in CSVs under
``<save_folder>/augment`` (skipped when done for the same folders). Long MUSAN
files are listed as segments of at most ``segment_seconds``, so one noise draw
reads a few seconds, not a whole song, and the user's folders are never
modified. Real RIRs whose name says ``noise`` (the isotropic noises) and
multi-channel files are left out.

:func:`build_noise_augmenter` gives a SpeechBrain ``Augmenter`` that applies,
with probability ``augment_prob``, one of: MUSAN noise at 0-15 dB SNR, babble
(3-7 MUSAN speech files summed) at 13-20 dB, music at 5-15 dB (SpeechBrain's
``AddNoise``, which sets the SNR of every utterance), or reverberation with a
random RIR (``AddReverb``). These are the Kaldi/WeSpeaker settings the
paper's authors use. The recipe puts it before the YAML's ``wav_augment``
(:func:`setup_noise_augmentation`).

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
from speechbrain.augment.time_domain import AddNoise, AddReverb

from sb_angcl.data.dataio import load_segment

logger = logging.getLogger(__name__)

#: SNR range (dB) of each MUSAN category, as Kaldi/WeSpeaker recipes use them.
MUSAN_SNR = {"noise": (0.0, 15.0), "speech": (13.0, 20.0), "music": (5.0, 15.0)}

MUSAN_LAYOUT = "musan_folder/{noise,speech,music}/**/*.wav (the MUSAN corpus as unpacked)"
RIR_LAYOUT = (
    "rir_folder/simulated_rirs/**/*.wav and/or rir_folder/real_rirs_isotropic_noises/*.wav "
    "(the RIRS_NOISES archive as unpacked)"
)
AUDIO_EXTENSIONS = (".wav", ".flac")


def _audio_files(folder):
    found = []
    for dirpath, _, names in os.walk(folder):
        found.extend(os.path.join(dirpath, n) for n in names if n.lower().endswith(AUDIO_EXTENSIONS))
    return sorted(found)


def find_musan(musan_folder):
    """Audio files of each MUSAN category.

    Arguments
    ---------
    musan_folder : str
        The MUSAN root.

    Returns
    -------
    dict
        ``{"noise": [...], "speech": [...], "music": [...]}``.

    Example
    -------
    >>> find_musan("/no/musan")
    Traceback (most recent call last):
     ...
    FileNotFoundError: musan_folder /no/musan does not exist; expected musan_folder/{noise,speech,music}/**/*.wav (the MUSAN corpus as unpacked). Fix the path, or set musan_folder: null to train without noise.
    """
    if not os.path.isdir(musan_folder):
        raise FileNotFoundError(
            f"musan_folder {musan_folder} does not exist; expected {MUSAN_LAYOUT}. Fix the "
            "path, or set musan_folder: null to train without noise."
        )
    files = {c: _audio_files(os.path.join(musan_folder, c)) for c in MUSAN_SNR}
    empty = [c for c, found in files.items() if not found]
    if empty:
        raise FileNotFoundError(
            f"musan_folder {musan_folder} has no audio in {', '.join(empty)}/; expected "
            f"{MUSAN_LAYOUT}."
        )
    return files


def find_rirs(rir_folder):
    """Mono impulse responses of RIRS_NOISES (simulated, then real).

    Arguments
    ---------
    rir_folder : str
        The RIRS_NOISES root.

    Returns
    -------
    list of str

    Example
    -------
    >>> import tempfile
    >>> find_rirs(tempfile.mkdtemp())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
     ...
    FileNotFoundError: rir_folder ... holds no impulse responses; expected rir_folder/simulated_rirs/**/*.wav ...
    """
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


def prepare_augmentation(save_folder, musan_folder=None, rir_folder=None, segment_seconds=10.0):
    """Write the noise and RIR lists (skipped when done for the same folders).

    Arguments
    ---------
    save_folder : str
        The CSVs go to ``save_folder/augment``.
    musan_folder : str or None
        MUSAN root, or ``None``.
    rir_folder : str or None
        RIRS_NOISES root, or ``None``.
    segment_seconds : float
        Longest MUSAN segment listed.

    Returns
    -------
    dict
        CSV path of each of ``noise``, ``speech``, ``music``, ``rir`` that is on.

    Example
    -------
    >>> import tempfile
    >>> from tools.noise_folders import generate_noise_folders
    >>> folders = generate_noise_folders(tempfile.mkdtemp(), num_files=1, seconds=0.5)
    >>> sorted(prepare_augmentation(tempfile.mkdtemp(), **folders))
    ['music', 'noise', 'rir', 'speech']
    """
    out = os.path.join(save_folder, "augment")
    os.makedirs(out, exist_ok=True)
    wanted = {"musan_folder": musan_folder and os.path.abspath(musan_folder),
              "rir_folder": rir_folder and os.path.abspath(rir_folder),
              "segment_seconds": segment_seconds}
    paths = {}
    if musan_folder:
        paths.update({c: os.path.join(out, f"musan_{c}.csv") for c in MUSAN_SNR})
    if rir_folder:
        paths["rir"] = os.path.join(out, "rirs.csv")
    marker = os.path.join(out, "prepared.json")
    if os.path.isfile(marker) and all(map(os.path.isfile, paths.values())):
        with open(marker, encoding="utf-8") as fin:
            if json.load(fin) == wanted:
                logger.info("Noise/RIR lists in %s are up to date; skipping.", out)
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
    return paths


class FileNoise:
    """Noise drawn from a segment list, for ``AddNoise(noise_funct=...)``.

    Each utterance of the batch gets a random window of a random segment
    (repeated when shorter), or the sum of ``mix`` such windows (babble).
    ``AddNoise`` then scales it to the drawn SNR. Randomness comes from
    torch's global generator (seeded by the recipe).

    Arguments
    ---------
    csv_path : str
        A list written by :func:`prepare_augmentation`.
    sample_rate : int
        Rate of the clean signals.
    mix : tuple of int
        ``(low, high)``: how many segments to sum (inclusive).

    Example
    -------
    >>> import tempfile
    >>> from tools.noise_folders import generate_noise_folders
    >>> folders = generate_noise_folders(tempfile.mkdtemp(), num_files=1, seconds=0.5)
    >>> csvs = prepare_augmentation(tempfile.mkdtemp(), folders["musan_folder"])
    >>> FileNoise(csvs["noise"])(torch.zeros(2, 3000)).shape
    torch.Size([2, 3000])
    """

    def __init__(self, csv_path, sample_rate=16000, mix=(1, 1)):
        with open(csv_path, newline="", encoding="utf-8") as fin:
            self.rows = [(r["wav"], int(r["start"]), int(r["stop"])) for r in csv.DictReader(fin)]
        if not self.rows:
            raise ValueError(f"{csv_path} lists no noise; rerun with the MUSAN folder filled.")
        self.sample_rate = sample_rate
        self.mix = mix

    def _window(self, length):
        wav, start, stop = self.rows[int(torch.randint(len(self.rows), (1,)))]
        noise = load_segment(wav, start, stop, self.sample_rate)
        if noise.shape[0] < length:
            noise = noise.repeat(-(-length // max(noise.shape[0], 1)))
        offset = int(torch.randint(noise.shape[0] - length + 1, (1,)))
        return noise[offset : offset + length]

    def __call__(self, waveforms):
        """Noise shaped like ``waveforms`` (``[batch, time]``)."""
        batch, length = waveforms.shape[0], waveforms.shape[1]
        out = torch.zeros(batch, length)
        for b in range(batch):
            count = int(torch.randint(self.mix[0], self.mix[1] + 1, (1,)))
            for _ in range(count):
                out[b] += self._window(length)
        return out.to(waveforms.device, waveforms.dtype)


def build_noise_augmenter(csvs, sample_rate=16000, augment_prob=0.6, snr=None, babble=(3, 7)):
    """One of noise / babble / music / reverberation per batch, with SpeechBrain's modules.

    Arguments
    ---------
    csvs : dict
        From :func:`prepare_augmentation`.
    sample_rate : int
        Rate of the clean signals.
    augment_prob : float
        Probability that a batch is corrupted at all.
    snr : dict or None
        ``{category: (low, high)}`` overriding :data:`MUSAN_SNR`.
    babble : tuple of int
        How many speech files a babble sums.

    Returns
    -------
    speechbrain.augment.augmenter.Augmenter or None
        ``None`` when ``csvs`` is empty.
    """
    snr = {**MUSAN_SNR, **(snr or {})}
    augmentations = []
    for category in ("noise", "speech", "music"):
        if category in csvs:
            mix = babble if category == "speech" else (1, 1)
            low, high = snr[category]
            augmentations.append(AddNoise(
                snr_low=low, snr_high=high, noise_funct=FileNoise(csvs[category], sample_rate, mix),
            ))
    if "rir" in csvs:
        augmentations.append(AddReverb(csvs["rir"], clean_sample_rate=sample_rate,
                                       reverb_sample_rate=sample_rate))
    if not augmentations:
        return None
    return Augmenter(
        parallel_augment=False, concat_original=False, min_augmentations=1,
        max_augmentations=1, augment_prob=augment_prob, augmentations=augmentations,
    )


class ChainedAugment(torch.nn.Module):
    """Apply ``first`` then ``second`` (each an Augmenter-like module or None).

    Arguments
    ---------
    first : torch.nn.Module or None
        Applied first (e.g. noise and reverberation).
    second : torch.nn.Module or None
        Applied next (the YAML's ``wav_augment``).

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


def setup_noise_augmentation(hparams, run_on_main=None):
    """Prepare the lists and chain the noise augmenter before ``wav_augment``.

    Reads ``musan_folder``, ``rir_folder`` (``None`` or absent: off),
    ``noise_augment_prob`` (default 0.6) and ``save_folder`` from ``hparams``
    and replaces ``hparams["wav_augment"]`` when one of the folders is set.

    Arguments
    ---------
    hparams : dict
        Loaded recipe hyperparameters (modified).
    run_on_main : callable or None
        SpeechBrain's ``run_on_main`` (preparation on the main process only).

    Returns
    -------
    dict
        The CSV paths (empty when both folders are off).

    Example
    -------
    >>> setup_noise_augmentation({"save_folder": "unused"})
    {}
    """
    musan, rir = hparams.get("musan_folder"), hparams.get("rir_folder")
    if not musan and not rir:
        return {}
    kwargs = {"save_folder": hparams["save_folder"], "musan_folder": musan, "rir_folder": rir}
    if run_on_main is not None:
        run_on_main(prepare_augmentation, kwargs=kwargs)
    csvs = prepare_augmentation(**kwargs)  # done by now: only reads the marker
    noise = build_noise_augmenter(
        csvs, hparams.get("sample_rate", 16000), hparams.get("noise_augment_prob", 0.6)
    )
    hparams["wav_augment"] = ChainedAugment(noise, hparams.get("wav_augment"))
    logger.info("Noise/reverberation augmentation on: %s", ", ".join(sorted(csvs)))
    return csvs


#: Values of the YAML's ``augmentation`` key.
AUGMENTATION_DOMAINS = ("waveform", "features", "none")


def select_augmenters(choice, wav_augment, feat_augment):
    """The waveform and feature augmenters a training step uses.

    Arguments
    ---------
    choice : str or None
        The YAML's ``augmentation``: ``waveform`` (the ``wav_augment``
        Augmenter), ``features`` (``feat_augment``, masks on the normalised
        filterbanks, nearly free) or ``none``; None uses every augmenter the
        YAML defines.
    wav_augment : torch.nn.Module or None
        The YAML's ``wav_augment``.
    feat_augment : torch.nn.Module or None
        The YAML's ``feat_augment``.

    Returns
    -------
    tuple
        ``(wav_augment, feat_augment)``, each an Augmenter or None.

    Example
    -------
    >>> select_augmenters("features", "W", "F"), select_augmenters(None, "W", None)
    ((None, 'F'), ('W', None))
    >>> select_augmenters("waveform", None, "F")
    Traceback (most recent call last):
     ...
    ValueError: augmentation: waveform needs `wav_augment` in the YAML
    """
    if choice is None:
        return wav_augment, feat_augment
    if choice not in AUGMENTATION_DOMAINS:
        raise ValueError(
            f"augmentation must be waveform, features or none, got {choice!r} "
            "(--augmentation=features)"
        )
    chosen = {"waveform": wav_augment, "features": feat_augment}
    if choice != "none" and chosen[choice] is None:
        key = "wav_augment" if choice == "waveform" else "feat_augment"
        raise ValueError(f"augmentation: {choice} needs `{key}` in the YAML")
    return (wav_augment if choice == "waveform" else None), (
        feat_augment if choice == "features" else None
    )

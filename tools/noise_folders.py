"""Small MUSAN- and RIRS_NOISES-shaped folders of synthetic audio.

The tests exercise the real noise and reverberation code path
(:mod:`sb_angcl.data.augment`) with these instead of the 11 GB MUSAN and the
RIRS_NOISES archive; ``python tools/noise_folders.py ROOT`` writes them for
trying the YAMLs' ``musan_folder`` / ``rir_folder`` by hand. The layouts are the
real ones::

    <root>/musan/noise/free-sound/noise-free-sound-0000.wav     coloured noise, hum
    <root>/musan/music/fma/music-fma-0000.wav                   note sequences
    <root>/musan/speech/librivox/speech-librivox-0000.wav       one synthetic voice each
    <root>/RIRS_NOISES/simulated_rirs/{small,medium,large}room/Room001/Room001-00001.wav
    <root>/RIRS_NOISES/real_rirs_isotropic_noises/RVB2014_type1_rir_synth_0.wav
    <root>/RIRS_NOISES/real_rirs_isotropic_noises/RVB2014_type1_noise_synth_0.wav

Impulse responses are a direct-path impulse followed by exponentially
decaying noise whose decay gives the room's RT60 (60 dB of energy decay).
Voices come from :mod:`synthetic_corpus` (a seed of its own, so not the
corpus' speakers).

Authors
 * sb-angcl contributors
"""

import os
import sys

import numpy as np
import soundfile as sf

# The generator is a top-level folder of the repository, not an installed package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from synthetic_corpus import make_session, make_speakers, synthesize_utterance  # noqa: E402

#: RT60 range (seconds) of each simulated room size, as in RIRS_NOISES.
ROOM_RT60 = {"smallroom": (0.2, 0.4), "mediumroom": (0.4, 0.7), "largeroom": (0.7, 1.0)}


def exponential_rir(rt60, sample_rate=16000, rng=None):
    """A synthetic room impulse response with a given RT60.

    Arguments
    ---------
    rt60 : float
        Time (s) for the energy to fall by 60 dB.
    sample_rate : int
        Rate in Hz.
    rng : numpy.random.Generator or int or None
        Random generator (or seed).

    Returns
    -------
    numpy.ndarray
        float32, ``1.2 * rt60`` seconds, peak 1 at sample 0 (the direct path).

    Example
    -------
    >>> h = exponential_rir(0.3, rng=0)
    >>> h.shape, float(h[0]), bool(np.abs(h[1:]).max() < 1)
    ((5760,), 1.0, True)
    """
    rng = np.random.default_rng(rng)
    n = int(round(1.2 * rt60 * sample_rate))
    t = np.arange(n) / sample_rate
    # Energy e^(-t / tau) falls by 60 dB at t = rt60: tau = rt60 / (6 ln 10).
    amplitude = np.exp(-t * 3.0 * np.log(10) / rt60)
    tail = 0.3 * rng.standard_normal(n) * amplitude
    tail[0] = 1.0
    return (tail / np.abs(tail).max()).astype(np.float32)


def _coloured_noise(n, exponent, rng):
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.maximum(np.fft.rfftfreq(n), 1.0 / n)
    x = np.fft.irfft(spectrum / freqs ** (exponent / 2.0), n)
    return x / np.abs(x).max()


def _music(n, sample_rate, rng):
    """Notes of 0.2-0.5 s with harmonics and decaying envelopes."""
    out = np.zeros(n)
    pos = 0
    while pos < n:
        length = min(int(rng.uniform(0.2, 0.5) * sample_rate), n - pos)
        t = np.arange(length) / sample_rate
        f0 = 110.0 * 2 ** (rng.integers(0, 36) / 12.0)
        note = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 5))
        out[pos : pos + length] += note * np.exp(-3.0 * t)
        pos += length
    return out / np.abs(out).max()


def _write(path, audio, sample_rate, peak=0.5):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    audio = np.asarray(audio, dtype=np.float64)
    sf.write(path, (peak * audio / max(np.abs(audio).max(), 1e-9)).astype(np.float32),
             sample_rate, subtype="PCM_16")


def generate_noise_folders(root, num_files=3, seconds=4.0, sample_rate=16000, seed=0):
    """Write small MUSAN and RIRS_NOISES folders under ``root``.

    Arguments
    ---------
    root : str
        Output folder (created); ``root/musan`` and ``root/RIRS_NOISES`` are written.
    num_files : int
        Files per MUSAN category, and RIRs per simulated room size.
    seconds : float
        Length of each MUSAN file.
    sample_rate : int
        Rate in Hz.

    Returns
    -------
    dict
        ``{"musan_folder": ..., "rir_folder": ...}``.

    Example
    -------
    >>> import tempfile
    >>> out = generate_noise_folders(tempfile.mkdtemp(), num_files=1, seconds=0.5)
    >>> sorted(os.listdir(out["musan_folder"])), sorted(os.listdir(out["rir_folder"]))
    (['music', 'noise', 'speech'], ['real_rirs_isotropic_noises', 'simulated_rirs'])
    """
    rng = np.random.default_rng(seed)
    musan = os.path.join(root, "musan")
    rirs = os.path.join(root, "RIRS_NOISES")
    n = int(round(seconds * sample_rate))
    voices = make_speakers(num_files, rng, num_languages=1)
    for i in range(num_files):
        # Noise: white, pink, brown in turn, with a mains hum on every other file.
        noise = _coloured_noise(n, exponent=i % 3, rng=rng)
        if i % 2:
            noise = noise + 0.5 * np.sin(2 * np.pi * 50 * np.arange(n) / sample_rate)
        _write(os.path.join(musan, "noise", "free-sound", f"noise-free-sound-{i:04d}.wav"),
               noise, sample_rate)
        _write(os.path.join(musan, "music", "fma", f"music-fma-{i:04d}.wav"),
               _music(n, sample_rate, rng), sample_rate)
        speech = synthesize_utterance(voices[i], "lang0", make_session(rng), seconds, rng,
                                      sample_rate=sample_rate)
        _write(os.path.join(musan, "speech", "librivox", f"speech-librivox-{i:04d}.wav"),
               speech, sample_rate)
    for room, (low, high) in ROOM_RT60.items():
        for i in range(num_files):
            h = exponential_rir(rng.uniform(low, high), sample_rate, rng)
            _write(os.path.join(rirs, "simulated_rirs", room, "Room001",
                                f"Room001-{i + 1:05d}.wav"), h, sample_rate, peak=0.9)
    real = os.path.join(rirs, "real_rirs_isotropic_noises")
    _write(os.path.join(real, "RVB2014_type1_rir_synth_0.wav"),
           exponential_rir(0.5, sample_rate, rng), sample_rate, peak=0.9)
    _write(os.path.join(real, "RVB2014_type1_noise_synth_0.wav"),
           _coloured_noise(n, 1, rng), sample_rate)
    return {"musan_folder": musan, "rir_folder": rirs}


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Write small MUSAN- and RIRS_NOISES-shaped folders.")
    parser.add_argument("root", help="output folder (gets musan/ and RIRS_NOISES/)")
    parser.add_argument("--files", type=int, default=3, help="files per category")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each file")
    args = parser.parse_args()
    folders = generate_noise_folders(args.root, num_files=args.files, seconds=args.seconds)
    print(" ".join(f"--{key}={path}" for key, path in folders.items()))

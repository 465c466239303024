"""Signal-processing helpers of the generator: smoothing, STFT, resonators.

Authors
 * sb-angcl contributors 2025
"""

import numpy as np


def smooth(x, width):
    """Moving average along axis 0 with edge padding (odd width).

    Arguments
    ---------
    x : numpy.ndarray
        1-D signal or (frames, channels) array.
    width : int
        Odd window length; 1 or less returns ``x``.

    Returns
    -------
    numpy.ndarray
        Same shape as ``x``.

    Example
    -------
    >>> smooth(np.array([0.0, 3.0, 0.0]), 3)
    array([1., 1., 1.])
    """
    if width <= 1:
        return x
    k = np.ones(width) / width
    pad = width // 2
    if x.ndim == 1:
        xp = np.pad(x, pad, mode="edge")
        return np.convolve(xp, k, mode="valid")
    xp = np.pad(x, ((pad, pad), (0, 0)), mode="edge")
    return np.stack([np.convolve(xp[:, j], k, mode="valid") for j in range(x.shape[1])], axis=1)


def resonance_power_den(freqs, fcent, bw, sr):
    """Squared denominator magnitudes of unity-DC-gain resonators.

    For H(z) = (1 + a1 + a2) / (1 + a1 z^-1 + a2 z^-2), returns
    |1 + a1 e^{-jw} + a2 e^{-2jw}|^2 / (1 + a1 + a2)^2, broadcast as
    ``fcent.shape + freqs.shape``.

    Arguments
    ---------
    freqs : numpy.ndarray
        Frequencies (Hz) at which to evaluate.
    fcent, bw : numpy.ndarray
        Centre frequencies and bandwidths (Hz) of the resonators.
    sr : int
        Sampling rate (Hz).

    Returns
    -------
    numpy.ndarray
        The normalised squared denominators (1 at DC).

    Example
    -------
    >>> round(float(resonance_power_den(np.array([0.0]), np.array(500.0), np.array(80.0), 16000)[0]), 9)
    1.0
    """
    r = np.exp(-np.pi * bw / sr)[..., None]
    theta = (2 * np.pi * fcent / sr)[..., None]
    w = 2 * np.pi * freqs / sr
    a1 = -2.0 * r * np.cos(theta)
    a2 = r * r
    den = (1.0 + a1 * a1 + a2 * a2) + 2.0 * a1 * (1.0 + a2) * np.cos(w) + 2.0 * a2 * np.cos(2 * w)
    return den / (1.0 + a1 + a2) ** 2


def stft(x, n_fft, hop, window):
    """Short-time Fourier transform with the signal centred (``n_fft // 2`` padding).

    Arguments
    ---------
    x : numpy.ndarray
        1-D signal.
    window : numpy.ndarray
        Analysis window of ``n_fft`` samples.

    Returns
    -------
    numpy.ndarray
        (``len(x) // hop + 1``, ``n_fft // 2 + 1``) complex spectra.

    Example
    -------
    >>> stft(np.zeros(100), 16, 4, np.hanning(16)).shape
    (26, 9)
    """
    pad = n_fft // 2
    n_frames = len(x) // hop + 1
    total = (n_frames - 1) * hop + n_fft
    xp = np.zeros(total)
    xp[pad : pad + len(x)] = x
    frames = np.lib.stride_tricks.sliding_window_view(xp, n_fft)[::hop][:n_frames]
    return np.fft.rfft(frames * window, axis=1)


def istft(spec, n_fft, hop, window, length):
    """Weighted overlap-add inverse of :func:`stft` (``n_fft`` a multiple of ``hop``).

    Arguments
    ---------
    spec : numpy.ndarray
        Spectra as returned by :func:`stft`.
    n_fft, hop : int
        Frame length and step used by :func:`stft`.

    Example
    -------
    >>> x = np.random.default_rng(0).standard_normal(64)
    >>> w = np.hanning(17)[:-1]
    >>> bool(np.allclose(istft(stft(x, 16, 4, w), 16, 4, w, 64)[8:-8], x[8:-8]))
    True
    """
    frames = np.fft.irfft(spec, n=n_fft, axis=1) * window
    n_frames = frames.shape[0]
    total = (n_frames - 1) * hop + n_fft
    out = np.zeros(total)
    norm = np.zeros(total)
    r = n_fft // hop
    wsq = window**2
    for j in range(r):
        # frames j, j+r, j+2r, ... do not overlap each other
        sub = frames[j::r]
        start = j * hop
        seg = sub.reshape(-1)
        out[start : start + len(seg)] += seg
        norm[start : start + len(seg)] += np.tile(wsq, len(sub))
    pad = n_fft // 2
    out = out[pad : pad + length]
    norm = norm[pad : pad + length]
    return out / np.maximum(norm, 1e-3)

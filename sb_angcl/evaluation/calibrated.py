"""Calibrated scores at inference: the score-to-LLR map and SpeechBrain's interface applying it.

A log-likelihood ratio (LLR) is decided at the Bayes threshold of a target
prior, fixed in advance. :class:`Calibration` is the map;
:class:`CalibratedSpeakerRecognition` returns LLRs from an exported folder.
The module imports nothing from ``sb_angcl``: an exported folder carries a
copy as ``custom.py``, which SpeechBrain's ``foreign_class`` loads.

Authors
 * sb-angcl contributors
"""

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from speechbrain.inference.speaker import SpeakerRecognition

logger = logging.getLogger(__name__)

#: Inputs of the affine map of each method, in the order of its weights.
FEATURES = {
    "linear": ("score",),
    "qmf": ("score", "log_enrol_seconds", "log_test_seconds"),
}


def logit(p):
    """``log(p / (1 - p))``, the log-odds of a probability in (0, 1).

    Example
    -------
    >>> round(logit(0.01), 4), logit(0.5)
    (-4.5951, 0.0)
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"a prior must be in (0, 1), got {p}")
    return math.log(p) - math.log1p(-p)


def bayes_threshold(p_target, c_miss=1.0, c_fa=1.0):
    """The LLR above which accepting costs less than rejecting: ``log(c_fa (1 - p) / (c_miss p))``.

    Example
    -------
    >>> round(bayes_threshold(0.01), 4), bayes_threshold(0.5)
    (4.5951, 0.0)
    """
    return math.log(c_fa) - math.log(c_miss) - logit(p_target)


def calibration_features(method, scores, enrol_seconds=None, test_seconds=None):
    """The inputs of a method's map (:data:`FEATURES`), one row per trial (``qmf``: with durations).

    Example
    -------
    >>> calibration_features("qmf", [0.5], [math.e], [1.0]).tolist()
    [[0.5, 1.0, 0.0]]
    """
    if method not in FEATURES:
        raise ValueError(f"calibration method must be one of {list(FEATURES)}, got {method!r}")
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().numpy()
    columns = [np.asarray(scores, dtype=np.float64).reshape(-1)]
    if method == "qmf":
        for name, seconds in (("enrol_seconds", enrol_seconds), ("test_seconds", test_seconds)):
            if seconds is None:
                raise ValueError(f"qmf calibration needs {name} (durations of the trials)")
            seconds = np.asarray(seconds, dtype=np.float64).reshape(-1)
            if seconds.shape != columns[0].shape:
                raise ValueError(f"{len(seconds)} {name} for {len(columns[0])} scores")
            if not (seconds > 0).all():
                raise ValueError(f"{name} must be positive (a log duration is an input)")
            columns.append(np.log(seconds))
    return np.stack(columns, axis=1)


@dataclass(frozen=True)
class Calibration:
    """A fitted map ``llr = offset + sum_k weights[k] * features[k]`` (:data:`FEATURES`).

    ``method`` is ``linear`` or ``qmf``; ``weights[0]`` multiplies the raw
    score; ``prior`` is the effective prior the map was fitted at.

    Example
    -------
    >>> cal = Calibration("linear", (10.0,), -5.0, 0.01)
    >>> cal.llr([0.5, 0.9]).tolist()
    [0.0, 4.0]
    >>> round(cal.score_threshold(0.01), 4)  # the raw score at the Bayes threshold
    0.9595
    >>> Calibration.from_dict(cal.to_dict()) == cal
    True
    """

    method: str
    weights: tuple
    offset: float
    prior: float

    def __post_init__(self):
        if self.method not in FEATURES:
            raise ValueError(f"calibration method must be one of {list(FEATURES)}, got {self.method!r}")
        object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
        object.__setattr__(self, "offset", float(self.offset))
        if len(self.weights) != len(FEATURES[self.method]):
            raise ValueError(f"{self.method} calibration has {len(FEATURES[self.method])} weights "
                             f"({', '.join(FEATURES[self.method])}), got {len(self.weights)}")

    def llr(self, scores, enrol_seconds=None, test_seconds=None):
        """LLRs of raw scores (float64 numpy; durations for ``qmf``)."""
        features = calibration_features(self.method, scores, enrol_seconds, test_seconds)
        return features @ np.asarray(self.weights) + self.offset

    def score_threshold(self, p_target, c_miss=1.0, c_fa=1.0):
        """The raw score at the Bayes threshold's LLR (None unless ``linear``, positive slope)."""
        if self.method != "linear" or self.weights[0] <= 0:
            return None
        return (bayes_threshold(p_target, c_miss, c_fa) - self.offset) / self.weights[0]

    def to_dict(self):
        """Plain values (for JSON / YAML)."""
        return {
            "method": self.method,
            "features": list(FEATURES[self.method]),
            "weights": list(self.weights),
            "offset": self.offset,
            "prior": self.prior,
        }

    @classmethod
    def from_dict(cls, values):
        """The inverse of :meth:`to_dict` (extra keys are ignored)."""
        return cls(values["method"], tuple(values["weights"]), values["offset"], values["prior"])


class CalibratedSpeakerRecognition(SpeakerRecognition):
    """SpeechBrain's ``SpeakerRecognition`` whose ``verify_batch``/``verify_files`` return LLRs.

    The map and the decision's ``p_target`` (``c_miss``, ``c_fa``) are the
    ``calibration`` mapping ``verify.py`` writes into ``hyperparams.yaml``;
    without it, cosine and 0.25 as upstream, with a warning. Load with
    ``from_hparams(source=folder)`` or ``foreign_class(source=folder,
    pymodule_file="custom.py", classname="CalibratedSpeakerRecognition")``.
    """

    def calibration(self):
        """The folder's :class:`Calibration` and decision settings, or None."""
        values = getattr(self.hparams, "calibration", None)
        if not values:
            return None
        return Calibration.from_dict(values), values

    def verify_batch(self, wavs1, wavs2, wav1_lens=None, wav2_lens=None, threshold=None):
        """LLRs ``(batch, 1)`` of pairs of waveforms and ``llr > threshold``.

        ``threshold`` is on the LLR scale; None: the Bayes threshold of the
        folder's ``p_target``.
        """
        emb1 = self.encode_batch(wavs1, wav1_lens, normalize=False)
        emb2 = self.encode_batch(wavs2, wav2_lens, normalize=False)
        cosine = self.similarity(emb1, emb2)
        found = self.calibration()
        if found is None:
            logger.warning("this folder holds no score calibration (run verify.py on it): "
                           "returning cosine scores, decision at 0.25")
            return cosine, cosine > (0.25 if threshold is None else threshold)
        cal, values = found
        shape = cosine.shape
        seconds = [self._seconds(w, n, values) for w, n in ((wavs1, wav1_lens), (wavs2, wav2_lens))]
        llr = cal.llr(cosine.reshape(-1), *seconds) if cal.method == "qmf" else cal.llr(cosine.reshape(-1))
        llr = torch.as_tensor(llr, dtype=cosine.dtype, device=cosine.device).reshape(shape)
        if threshold is None:
            threshold = bayes_threshold(
                values["p_target"], values.get("c_miss", 1.0), values.get("c_fa", 1.0)
            )
        return llr, llr > threshold

    @staticmethod
    def _seconds(wavs, lens, values):
        """Seconds of audio per row, capped as verify.py capped them (``max_seconds``)."""
        if wavs.dim() == 1:
            wavs = wavs.unsqueeze(0)
        rel = torch.ones(wavs.shape[0]) if lens is None else lens.detach().cpu().float()
        seconds = rel.numpy() * wavs.shape[1] / values["sample_rate"]
        if values.get("max_seconds"):
            seconds = np.minimum(seconds, values["max_seconds"])
        return seconds

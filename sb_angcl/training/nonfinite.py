"""Training through non-finite values: skip the batch, name the file, give up in time.

A batch whose loss or gradient is NaN/inf on any rank is skipped on every
rank by :class:`~sb_angcl.training.brain.AngularContrastiveBrain`; :class:`SkippedBatches`
does the bookkeeping: it puts back the module buffers (BatchNorm statistics,
already updated by the forward pass), counts the skips, warns, and raises
:class:`NonFiniteLossError` after more than ``patience`` in a row.
:func:`note_nonfinite_audio` names, once each, the files whose audio held
NaN/inf samples (zeroed by the data pipeline).

Authors
 * sb-angcl contributors
"""

import logging

import torch

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Too many consecutive batches had a non-finite loss or gradient."""


def gradients_finite(module):
    """Whether every gradient of ``module``'s parameters is finite.

    Arguments
    ---------
    module : torch.nn.Module
        The trained modules.

    Returns
    -------
    bool

    Example
    -------
    >>> layer = torch.nn.Linear(2, 1)
    >>> layer.weight.grad = torch.tensor([[1.0, float("nan")]])
    >>> gradients_finite(layer)
    False
    """
    for param in module.parameters():
        if param.grad is not None and not bool(torch.isfinite(param.grad).all()):
            return False
    return True


class SkippedBatches:
    """Buffers kept across a step, and the count of batches skipped.

    Arguments
    ---------
    patience : int
        Consecutive skips tolerated; one more raises :class:`NonFiniteLossError`.

    Example
    -------
    >>> norm = torch.nn.BatchNorm1d(2)
    >>> skips = SkippedBatches(patience=0)
    >>> skips.keep_buffers(norm)
    >>> _ = norm(torch.randn(4, 2))  # moves the running statistics
    >>> skips.skip(["u1"], step=1, what="loss")
    Traceback (most recent call last):
     ...
    sb_angcl.training.nonfinite.NonFiniteLossError: 1 consecutive batches had a non-finite loss. Check the data (silent or corrupt audio), lower the learning rate, raise the contrastive temperature, or use --precision=fp32; training resumes from the last checkpoint once fixed.
    >>> float(norm.running_mean.abs().sum()), skips.total
    (0.0, 1)
    """

    def __init__(self, patience):
        self.patience = patience
        self.in_a_row = 0
        self.total = 0
        self._buffers = []

    def keep_buffers(self, module):
        """Copy ``module``'s buffers before a forward pass that may be skipped.

        Arguments
        ---------
        module : torch.nn.Module
            The trained modules.
        """
        self._buffers = [(buf, buf.detach().clone()) for buf in module.buffers()]

    def stepped(self, optimised):
        """The batch trained: drop the copies (and end a run of skips if it stepped).

        Arguments
        ---------
        optimised : bool
            Whether the optimiser stepped after the batch.
        """
        self._buffers = []
        if optimised:
            self.in_a_row = 0

    def skip(self, ids, step, what):
        """Put the buffers back, count the skip, warn; raise after too many.

        Arguments
        ---------
        ids : list of str
            Utterance ids of the batch (the first few are named).
        step : int
            The Brain's step.
        what : str
            ``loss`` or ``gradient``.
        """
        with torch.no_grad():
            for buf, saved in self._buffers:
                buf.copy_(saved)
        self._buffers = []
        self.in_a_row += 1
        self.total += 1
        logger.warning(
            "Non-finite %s on batch %s (ids %s...): batch skipped, weights untouched "
            "(%d in a row).",
            what,
            step,
            list(ids)[:3],
            self.in_a_row,
        )
        if self.in_a_row > self.patience:
            raise NonFiniteLossError(
                f"{self.in_a_row} consecutive batches had a non-finite "
                f"{what}. Check the data (silent or corrupt audio), lower the learning "
                "rate, raise the contrastive temperature, or use --precision=fp32; "
                "training resumes from the last checkpoint once fixed."
            )


def note_nonfinite_audio(batch, seen):
    """Warn once per file whose crop held NaN/inf samples (zeroed on load).

    The data pipeline (:func:`sb_angcl.data.dataio.make_train_pipeline`) runs in
    worker processes; it replaces the samples and reports their count in
    ``sig_nonfinite``, so the other utterances of the batch train as usual
    and the training process keeps one list of the files for the whole run.

    Arguments
    ---------
    batch : PaddedBatch
        A batch, with ``sig_nonfinite`` (and ``wav``) when the pipeline
        provides them; without them nothing is done.
    seen : dict
        File path -> count of non-finite samples; new files are added.

    Returns
    -------
    list of str
        The files newly reported.

    Example
    -------
    >>> from speechbrain.dataio.batch import PaddedBatch
    >>> batch = PaddedBatch([{"id": "a", "wav": "a.wav", "sig_nonfinite": 0},
    ...                      {"id": "b", "wav": "b.wav", "sig_nonfinite": 3}])
    >>> seen = {}
    >>> note_nonfinite_audio(batch, seen), seen
    (['b.wav'], {'b.wav': 3})
    """
    counts = getattr(batch, "sig_nonfinite", None)
    if counts is None:
        return []
    paths = getattr(batch, "wav", None) or list(batch.id)
    new = []
    for path, count in zip(paths, counts):
        count = int(count)
        if count and path not in seen:
            logger.warning(
                "Audio file %s holds non-finite samples (NaN or inf; %d in this "
                "crop). They are replaced by zeros and the rest of the batch trains; "
                "re-convert or remove the file.", path, count,
            )
            seen[path] = count
            new.append(path)
    return new

"""Training through non-finite values: skip the batch, name the file, give up in time.

A batch whose loss or gradient is NaN/inf on any rank is skipped on every
rank (the decision is a collective, so the replicas stay equal).
SpeechBrain's own non-finite patience counts losses only and leaves the
BatchNorm statistics the forward pass updated: :class:`SkippedBatches` puts
them back, counts gradient skips too, and raises :class:`NonFiniteLossError`
after more than ``patience`` in a row.

Authors
 * sb-angcl contributors
"""

import logging

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Too many consecutive batches had a non-finite loss or gradient."""


def all_ranks_finite(tensor):
    """Whether ``tensor`` is finite on every rank (a collective under DDP).

    Example
    -------
    >>> all_ranks_finite(torch.tensor(1.0)), all_ranks_finite(torch.tensor(float("nan")))
    (True, False)
    """
    ok = torch.isfinite(tensor.detach()).all().to(torch.float32).reshape(1)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    return bool(ok.item())


def gradients_finite(module):
    """Whether every gradient of ``module``'s parameters is finite.

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
    """The batch in flight (buffers, ids), whether it is skipped, and the skips counted.

    ``patience``: consecutive skips tolerated; one more raises :class:`NonFiniteLossError`.

    Example
    -------
    >>> norm = torch.nn.BatchNorm1d(2)
    >>> skips = SkippedBatches(patience=0)
    >>> skips.begin(norm, ["u1"])
    >>> _ = norm(torch.randn(4, 2))  # moves the running statistics
    >>> skips.skip(step=1, what="loss")  # patience 0: the first skip is one too many
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
        self.skipping = False
        self._buffers = []
        self._ids = []

    def begin(self, module, ids):
        """A batch starts: copy ``module``'s buffers (its forward pass may be undone)."""
        self._buffers = [(buf, buf.detach().clone()) for buf in module.buffers()]
        self._ids = list(ids)
        self.skipping = False

    def _restore(self):
        with torch.no_grad():
            for buf, saved in self._buffers:
                buf.copy_(saved)
        self._buffers = []

    def skip(self, step, what):
        """Mark the batch in flight skipped (``what``: ``loss`` or ``gradient``), warn, count.

        Its buffers are put back at :meth:`end` (the backward pass may still
        need them), or before the error.
        """
        self.skipping = True
        self.in_a_row += 1
        self.total += 1
        logger.warning(
            "Non-finite %s on batch %s (ids %s...): batch skipped, weights untouched "
            "(%d in a row).", what, step, self._ids[:3], self.in_a_row,
        )
        if self.in_a_row > self.patience:
            self._restore()
            raise NonFiniteLossError(
                f"{self.in_a_row} consecutive batches had a non-finite "
                f"{what}. Check the data (silent or corrupt audio), lower the learning "
                "rate, raise the contrastive temperature, or use --precision=fp32; "
                "training resumes from the last checkpoint once fixed."
            )

    def end(self, optimised):
        """The batch is over (buffers back if it was skipped); returns whether it was. A step ends a run of skips."""
        skipped, self.skipping = self.skipping, False
        if skipped:
            self._restore()
        self._buffers = []
        if optimised and not skipped:
            self.in_a_row = 0
        return skipped


def note_nonfinite_audio(batch, seen):
    """Warn once per file whose crop held NaN/inf samples; returns the new files.

    The data pipeline (:func:`sb_angcl.data.dataio.make_train_pipeline`, in
    worker processes) zeroes them and reports their count in
    ``sig_nonfinite``; ``seen`` (path -> count) is the run's list.

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

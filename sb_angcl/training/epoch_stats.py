"""What the Brain reports about a training epoch: mean losses, alpha, attention spread.

Authors
 * sb-angcl contributors
"""

import math
import time


class EpochStats:
    """Running sums over the optimised training batches of one epoch.

    :meth:`means` gives ``loss_cls``, ``loss_con``, ``alpha`` and, when the
    attention ran, ``w_p5`` and ``w_p95``: the mean over batches of the 5th and
    95th percentiles of the negative-pair weights (1 and 1: attention inert).

    Example
    -------
    >>> from sb_angcl.objective.joint import ObjectiveResult
    >>> stats = EpochStats()
    >>> stats.add(ObjectiveResult(None, 2.0, 1.0, 0.5, (0.8, 1.2)))
    >>> stats.add(ObjectiveResult(None, 4.0, 3.0, 0.7, None))
    >>> {k: round(v, 3) for k, v in stats.means().items()}
    {'loss_cls': 3.0, 'loss_con': 2.0, 'alpha': 0.6, 'w_p5': 0.8, 'w_p95': 1.2}
    """

    def __init__(self):
        self.sums = {"loss_cls": 0.0, "loss_con": 0.0, "alpha": 0.0}
        self.batches = 0
        self.weight_sums = [0.0, 0.0]
        self.weighted_batches = 0
        self.start = time.time()

    def add(self, result):
        """Count one optimised batch (an :class:`~sb_angcl.objective.joint.ObjectiveResult`)."""
        for key in self.sums:
            value = getattr(result, key)
            self.sums[key] += float(value.detach() if hasattr(value, "detach") else value)
        self.batches += 1
        # NaN percentiles: the batch had no negatives, not counted.
        if result.weight_spread is not None and math.isfinite(result.weight_spread[0]):
            self.weight_sums[0] += result.weight_spread[0]
            self.weight_sums[1] += result.weight_spread[1]
            self.weighted_batches += 1

    def means(self):
        """The means of the epoch so far (see the class docstring)."""
        n = max(self.batches, 1)
        out = {key: value / n for key, value in self.sums.items()}
        if self.weighted_batches:
            out["w_p5"] = self.weight_sums[0] / self.weighted_batches
            out["w_p95"] = self.weight_sums[1] / self.weighted_batches
        return out

    def seconds(self):
        """Wall seconds since the epoch started."""
        return time.time() - self.start

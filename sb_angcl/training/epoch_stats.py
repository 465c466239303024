"""What the Brain reports about a training epoch: mean losses, alpha, attention.

:class:`EpochStats` adds up, over the optimised batches of an epoch, the two
objectives, the balancer's ``alpha`` and the spread of the class-aware
attention weights, and gives their means for the training log.

Authors
 * sb-angcl contributors
"""

import math
import time


class EpochStats:
    """Running sums over the optimised training batches of one epoch.

    Example
    -------
    >>> stats = EpochStats()
    >>> stats.add(2.0, 1.0, 0.5)
    >>> stats.add(4.0, 3.0, 0.7)
    >>> stats.add_weight_spread(0.8, 1.2)
    >>> {k: round(v, 3) for k, v in stats.means().items()}
    {'loss_cls': 3.0, 'loss_con': 2.0, 'alpha': 0.6, 'w_p5': 0.8, 'w_p95': 1.2}
    """

    def __init__(self):
        self.sums = {"loss_cls": 0.0, "loss_con": 0.0, "alpha": 0.0}
        self.batches = 0
        self.weight_sums = [0.0, 0.0]
        self.weighted_batches = 0
        self.start = time.time()

    def add(self, loss_cls, loss_con, alpha):
        """Count one optimised batch.

        Arguments
        ---------
        loss_cls : torch.Tensor or float
            Classification loss.
        loss_con : torch.Tensor or float
            Contrastive loss.
        alpha : torch.Tensor or float
            Weight of the classification loss.
        """
        for key, value in (("loss_cls", loss_cls), ("loss_con", loss_con), ("alpha", alpha)):
            self.sums[key] += float(value.detach() if hasattr(value, "detach") else value)
        self.batches += 1

    def add_weight_spread(self, low, high):
        """Count the 5th/95th percentiles of one batch's negative-pair weights.

        Arguments
        ---------
        low : float
            5th percentile (NaN when the batch had no negatives: not counted).
        high : float
            95th percentile.
        """
        if math.isfinite(low):
            self.weight_sums[0] += low
            self.weight_sums[1] += high
            self.weighted_batches += 1

    def means(self):
        """Mean losses and alpha; the weight percentiles when attention ran.

        Returns
        -------
        dict
            ``loss_cls``, ``loss_con``, ``alpha`` and, with attention,
            ``w_p5`` and ``w_p95`` (1 and 1: attention inert).
        """
        n = max(self.batches, 1)
        out = {key: value / n for key, value in self.sums.items()}
        if self.weighted_batches:
            out["w_p5"] = self.weight_sums[0] / self.weighted_batches
            out["w_p95"] = self.weight_sums[1] / self.weighted_batches
        return out

    def seconds(self):
        """Wall seconds since the epoch started.

        Returns
        -------
        float
        """
        return time.time() - self.start


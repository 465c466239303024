"""The training objective of one batch: AAM-softmax and AM-SupCon, balanced.

:class:`JointObjective` is what the Brain calls in training::

    loss = alpha * L_cls + (1 - alpha) * L_con

``L_cls`` is SpeechBrain's AAM-softmax on the classifier's cosines, local to
the rank. ``L_con`` is :class:`~sb_angcl.objective.losses.AngularSupConLoss`
on the embeddings (or the YAML's contrastive head of them), its negatives
weighted by the confidences the same cosines give (class-aware attention);
under DDP on the batch gathered from every rank
(:mod:`sb_angcl.objective.distributed`). ``alpha`` comes from the balancer
(:mod:`sb_angcl.objective.balancing`); without contrastive weight ``alpha = 1``
and ``L_con`` is not computed.

Authors
 * sb-angcl contributors
"""

from typing import NamedTuple, Optional, Tuple

import torch

from sb_angcl.objective.balancing import Balancer
from sb_angcl.objective.distributed import gather_no_grad, gather_with_grad, world_size
from sb_angcl.objective.losses import negative_weight_spread


class ObjectiveResult(NamedTuple):
    """The parts of one batch's objective (losses in float32)."""

    #: ``alpha * loss_cls + (1 - alpha) * loss_con``, with its graph.
    loss: torch.Tensor
    loss_cls: torch.Tensor
    loss_con: torch.Tensor
    #: Detached weight of the classification loss.
    alpha: torch.Tensor
    #: 5th and 95th percentiles of the negative-pair weights; None without attention.
    weight_spread: Optional[Tuple[float, float]]


class JointObjective:
    """The balanced objective of a training batch.

    Arguments
    ---------
    classification_loss : callable
        ``(cosine [N, 1, C], labels [N, 1]) -> loss``, e.g. SpeechBrain's
        ``LogSoftmaxWrapper(AdditiveAngularMargin(...))``.
    contrastive_loss : sb_angcl.objective.losses.AngularSupConLoss or None
        None: no contrastive loss (``alpha = 1``).
    balancer : sb_angcl.objective.balancing.Balancer
    gather_across_ranks : bool
        Under DDP, the contrastive loss of the gathered global batch.
    fade_start, fade_end : int or None
        The fading schedule (:func:`contrastive_share`, set per epoch by
        :meth:`start_epoch`): ``alpha`` becomes ``1 - share * (1 - alpha)``.

    Example
    -------
    >>> from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper
    >>> from sb_angcl.objective.balancing import make_balancer
    >>> from sb_angcl.objective.losses import AngularSupConLoss
    >>> objective = JointObjective(
    ...     LogSoftmaxWrapper(AdditiveAngularMargin(0.2, 30)),
    ...     AngularSupConLoss(0.2, 0.07, attention_temperature=1 / 30),
    ...     make_balancer("mgda_ub"), fade_start=2, fade_end=4)
    >>> embeddings = torch.randn(6, 1, 8, requires_grad=True)
    >>> cosine = torch.rand(6, 1, 3) * 2 - 1
    >>> labels = torch.tensor([0, 0, 1, 1, 2, 2]).unsqueeze(1)
    >>> result = objective(embeddings, cosine, labels)
    >>> result.loss.backward()
    >>> 0.0 <= float(result.alpha) <= 1.0, len(result.weight_spread)
    (True, 2)
    >>> [objective.start_epoch(epoch) for epoch in (2, 3, 4)]
    [1.0, 0.5, 0.0]
    """

    def __init__(
        self, classification_loss, contrastive_loss, balancer, gather_across_ranks=True,
        fade_start=None, fade_end=None,
    ):
        if not isinstance(balancer, Balancer):
            raise TypeError(
                f"balancer must be a sb_angcl.objective.balancing.Balancer, got "
                f"{type(balancer).__name__}; build it in the YAML with "
                "!apply:sb_angcl.objective.balancing.make_balancer"
            )
        self.classification_loss = classification_loss
        self.contrastive_loss = contrastive_loss
        self.balancer = balancer
        self.gather_across_ranks = gather_across_ranks
        self.fade_start, self.fade_end = fade_start, fade_end
        self.contrastive_share = contrastive_share(1, fade_start, fade_end)

    def start_epoch(self, epoch):
        """Sets the fading schedule's share of the contrastive term for ``epoch`` (from 1)."""
        self.contrastive_share = contrastive_share(epoch, self.fade_start, self.fade_end)
        return self.contrastive_share

    def __call__(self, embeddings, cosine, labels, head=None, encoder=None, grad_scale=1.0):
        """The objective of one batch.

        ``embeddings`` ``[N, 1, D]`` (with graph), float32 ``cosine`` ``[N, 1, C]``
        without margin, ``labels`` ``[N, 1]``; the contrastive loss sees
        ``head(embeddings)``; ``encoder``: whose parameters ``mgda`` needs;
        ``grad_scale``: the GradScaler's (1 without one).
        """
        loss_cls = self.classification_loss(cosine, labels)
        if (
            self.contrastive_loss is None
            or not self.balancer.uses_contrastive
            or self.contrastive_share == 0.0
        ):
            zero = embeddings.float().sum() * 0.0
            return ObjectiveResult(loss_cls, loss_cls, zero, torch.tensor(1.0), None)
        flat_labels = labels.reshape(-1)
        confidence = self.contrastive_loss.confidence(cosine, flat_labels)
        z = embeddings if head is None else head(embeddings)
        if self.gather_across_ranks and world_size() > 1:
            z = gather_with_grad(z.reshape(z.shape[0], -1))
            flat_labels = gather_no_grad(flat_labels)
            if confidence is not None:
                confidence = gather_no_grad(confidence)
        spread = None
        if confidence is not None:
            spread = negative_weight_spread(confidence, flat_labels)
        loss_con = self.contrastive_loss(z, flat_labels, confidence)
        parameters = None
        if self.balancer.needs_parameters:
            parameters = list(encoder.parameters())
        loss, alpha = self.balancer(
            loss_cls, loss_con, shared=embeddings, parameters=parameters, grad_scale=grad_scale
        )
        if self.contrastive_share < 1.0:
            alpha = 1.0 - self.contrastive_share * (1.0 - alpha)
            loss = alpha * loss_cls + (1.0 - alpha) * loss_con
        return ObjectiveResult(loss, loss_cls, loss_con, alpha, spread)


def contrastive_share(epoch, fade_start=None, fade_end=None):
    """The contrastive term's share in ``epoch`` (from 1) of a fading schedule.

    1 up to ``fade_start``, falling linearly to 0 at ``fade_end`` and after:
    the contrastive loss shapes the space early, AAM-softmax alone finishes.
    ``fade_start`` None keeps it at 1. It depends on the epoch alone, so a
    resumed run continues the schedule.

    Example
    -------
    >>> [round(contrastive_share(e, 3, 6), 3) for e in range(1, 8)]
    [1.0, 1.0, 1.0, 0.667, 0.333, 0.0, 0.0]
    >>> contrastive_share(5)
    1.0
    """
    if fade_start is None:
        return 1.0
    if fade_end is None or fade_end <= fade_start:
        raise ValueError(
            f"contrastive_fade_end ({fade_end}) must be an epoch after contrastive_fade_start "
            f"({fade_start}); set contrastive_fade_start: null to keep the contrastive term"
        )
    return min(max((fade_end - epoch) / (fade_end - fade_start), 0.0), 1.0)

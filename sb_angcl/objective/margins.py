"""Margin warm-up for the AAM-softmax and AM-SupCon margins.

Large margins from the first step slow down (or stall) the start of training
while the embedding is still random; the strongest public recipes (WeSpeaker's
margin scheduler, 3D-Speaker) raise the margin from 0 over the first epochs.
:class:`MarginWarmup` does this for both losses of the joint objective:

    m(t) = m_target * min(1, t / W)

with ``t`` the training progress in epochs (``epoch - 1`` plus the fraction of
the epoch's batches done) and ``W = margin_warmup_epochs``; ``W = 0`` leaves
the margins alone. The margin reaches its target at the first step of epoch
``W + 1`` and stays there.

Margins are set on the loss objects themselves: ``margin`` of
:class:`~sb_angcl.objective.losses.AngularSupConLoss` and the ``margin`` (with the
derived ``cos_m``, ``sin_m``, ``th``, ``mm``) of SpeechBrain's
``AdditiveAngularMargin``, so nothing in either loss changes.

Authors
 * sb-angcl contributors
"""

import math

import torch


def set_aam_margin(aam, margin):
    """Set the margin of a SpeechBrain ``AdditiveAngularMargin`` in place.

    Arguments
    ---------
    aam : speechbrain.nnet.losses.AdditiveAngularMargin
        The module (its derived constants are updated too).
    margin : float
        New margin (radians).

    Example
    -------
    >>> from speechbrain.nnet.losses import AdditiveAngularMargin
    >>> aam = AdditiveAngularMargin(margin=0.2, scale=30)
    >>> set_aam_margin(aam, 0.0)
    >>> aam.margin, aam.cos_m, aam.th
    (0.0, 1.0, -1.0)
    """
    aam.margin = float(margin)
    aam.cos_m = math.cos(aam.margin)
    aam.sin_m = math.sin(aam.margin)
    aam.th = math.cos(math.pi - aam.margin)
    aam.mm = math.sin(math.pi - aam.margin) * aam.margin


def find_aam(classification_loss):
    """The ``AdditiveAngularMargin`` inside a classification loss, or None.

    Arguments
    ---------
    classification_loss : torch.nn.Module
        E.g. ``LogSoftmaxWrapper(AdditiveAngularMargin(...))``.

    Returns
    -------
    torch.nn.Module or None

    Example
    -------
    >>> from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper
    >>> type(find_aam(LogSoftmaxWrapper(AdditiveAngularMargin(0.2, 30)))).__name__
    'AdditiveAngularMargin'
    """
    if not isinstance(classification_loss, torch.nn.Module):
        return None
    for module in classification_loss.modules():
        if all(hasattr(module, k) for k in ("margin", "cos_m", "sin_m", "th", "mm")):
            return module
    return None


class MarginWarmup:
    """Linear warm-up of the AAM and AM-SupCon margins over the first epochs.

    Arguments
    ---------
    epochs : float
        ``W``, the warm-up length in epochs; ``0`` = off.
    classification_loss : torch.nn.Module, optional
        Holding a SpeechBrain ``AdditiveAngularMargin``.
    contrastive_loss : sb_angcl.objective.losses.AngularSupConLoss, optional
        Its ``margin`` is warmed up too.

    Example
    -------
    >>> from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper
    >>> from sb_angcl.objective.losses import AngularSupConLoss
    >>> cls = LogSoftmaxWrapper(AdditiveAngularMargin(0.2, 30))
    >>> con = AngularSupConLoss(margin=0.3)
    >>> warm = MarginWarmup(2, cls, con)
    >>> warm.update(epoch=1, fraction=0.5)   # a quarter of the way
    (0.05, 0.075)
    >>> warm.update(epoch=3, fraction=0.0)   # first step of epoch W + 1
    (0.2, 0.3)
    """

    def __init__(self, epochs, classification_loss=None, contrastive_loss=None):
        if not epochs >= 0:
            raise ValueError(f"margin_warmup_epochs must be >= 0, got {epochs}")
        self.epochs = float(epochs)
        if not self.epochs:  # off: the losses are left alone, whatever they are
            classification_loss = contrastive_loss = None
        if contrastive_loss is not None and not hasattr(contrastive_loss, "margin"):
            raise ValueError(
                f"margin_warmup_epochs needs a contrastive loss with a margin, got "
                f"{type(contrastive_loss).__name__}"
            )
        self.aam = find_aam(classification_loss) if classification_loss is not None else None
        self.contrastive = contrastive_loss
        self.aam_target = float(self.aam.margin) if self.aam is not None else None
        self.con_target = (
            float(contrastive_loss.margin) if contrastive_loss is not None else None
        )

    @property
    def enabled(self):
        """True when there is a warm-up."""
        return self.epochs > 0

    def factor(self, epoch, fraction=0.0):
        """``min(1, t / W)`` at ``t = epoch - 1 + fraction``.

        Arguments
        ---------
        epoch : int
            The current epoch (1-based).
        fraction : float
            Fraction of this epoch's batches done, in ``[0, 1)``.

        Returns
        -------
        float
        """
        if not self.enabled:
            return 1.0
        return min(1.0, max(0.0, (epoch - 1 + fraction) / self.epochs))

    def update(self, epoch, fraction=0.0):
        """Set both margins for this point of training.

        Arguments
        ---------
        epoch : int
            The current epoch (1-based).
        fraction : float
            Fraction of this epoch's batches done.

        Returns
        -------
        tuple of float or None
            The AAM and AM-SupCon margins now in force (rounded to 1e-9).
        """
        k = self.factor(epoch, fraction)
        aam = con = None
        if self.aam is not None:
            set_aam_margin(self.aam, self.aam_target * k)
            aam = round(self.aam.margin, 9)
        if self.contrastive is not None:
            self.contrastive.margin = self.con_target * k
            con = round(self.contrastive.margin, 9)
        return aam, con

"""Class-aware attention (CAA) over the negative pairs of a batch.

After Wang et al. (AAAI 2019, "Online Soft Mining and Class-Aware
Attention"), as used by Li, Mak & Meng (ICASSP 2023). Each sample ``j`` gets a
confidence, the speaker classifier's posterior for its own speaker::

    a_j = softmax(cos(z_j, W) / T_att)[y_j]

computed from the classifier's cosine logits *without* margin and detached
from the graph. A negative pair ``(i, n)`` gets ``A_in = min(a_i, a_n)``, and
the weights over one anchor's negatives are renormalised to mean one::

    w_in = |N(i)| * A_in / sum_{n' in N(i)} A_in'

so the attention reshapes the contrastive denominator without changing its
scale: ambiguous (hard or mislabelled) samples push less on the anchor.
``T_att -> inf`` gives ``w = 1`` (no attention).

The authors' code multiplies the logits by ``A`` inside the exponent; we
follow the paper's description of down-weighting the negatives' terms.

Authors
 * sb-angcl contributors
"""

import torch


def class_confidence(cosine_logits, labels, temperature=1.0):
    """Posterior of each sample's own class, detached.

    Arguments
    ---------
    cosine_logits : torch.Tensor
        Classifier cosines without margin, ``[N, C]`` or ``[N, 1, C]``.
    labels : torch.Tensor
        ``[N]`` or ``[N, 1]`` class indices.
    temperature : float
        Attention temperature ``T_att`` (> 0).

    Returns
    -------
    torch.Tensor
        ``[N]`` float32 confidences in ``(0, 1]``.

    Example
    -------
    >>> cos = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.9, 0.1]])
    >>> class_confidence(cos, torch.tensor([0, 1, 1]), temperature=0.1).round(decimals=3)
    tensor([1.0000, 0.9980, 0.0000])
    """
    if cosine_logits.dim() == 3:
        cosine_logits = cosine_logits.squeeze(1)
    labels = labels.reshape(-1).long()
    with torch.no_grad():
        logits = cosine_logits.detach().float() / temperature
        posterior = torch.softmax(logits, dim=1)
        return posterior.gather(1, labels.unsqueeze(1)).squeeze(1)


def pair_weights_from_confidence(confidence, labels):
    """Negative-pair weights ``w_in`` from per-sample confidences.

    Arguments
    ---------
    confidence : torch.Tensor
        ``[N]`` confidences ``a_j`` (e.g. from :func:`class_confidence`).
    labels : torch.Tensor
        ``[N]`` or ``[N, 1]`` class labels.

    Returns
    -------
    torch.Tensor
        ``[N, N]`` weights: over each row's negatives they are
        ``|N(i)| * min(a_i, a_n) / sum_n' min(a_i, a_n')`` (mean one); all
        other entries are one. A row whose weights all underflow to zero keeps
        weight one.

    Example
    -------
    >>> w = pair_weights_from_confidence(
    ...     torch.tensor([0.9, 0.9, 0.1, 0.9]), torch.tensor([0, 0, 1, 2]))
    >>> [round(v, 4) for v in w[0].tolist()]  # anchor 0: negatives 2 (ambiguous) and 3
    [1.0, 1.0, 0.2, 1.8]
    """
    labels = labels.reshape(-1)
    with torch.no_grad():
        # Subnormal confidences (softmax at a very low T_att) would make the
        # renormalisation overflow: they are raised to the smallest normal.
        a = confidence.detach().float().reshape(-1).clamp_min(torch.finfo(torch.float32).tiny)
        n = a.shape[0]
        same = labels.unsqueeze(0) == labels.unsqueeze(1)
        pair = torch.minimum(a.unsqueeze(0), a.unsqueeze(1)).masked_fill_(same, 0.0)
        total = pair.sum(dim=1, keepdim=True)
        # |N(i)| = N - (size of i's class), without another N x N pass.
        _, inverse, class_size = torch.unique(labels, return_inverse=True, return_counts=True)
        count = (n - class_size[inverse]).unsqueeze(1).to(pair.dtype)
        usable = total > 0
        scale = torch.where(usable, count / torch.where(usable, total, 1.0), 1.0)
        pair.mul_(scale)
        # Non-negative entries, and rows whose weights all underflowed, are one.
        return pair.masked_fill_(same | ~usable, 1.0)


def negative_weight_percentiles(weights, labels, q=(0.05, 0.95)):
    """Percentiles of the negative-pair weights of a batch.

    A summary of how much the attention acts: ``(1, 1)`` means every negative
    keeps weight one (inert attention); a wide spread means some negatives
    are discounted and others count more.

    Arguments
    ---------
    weights : torch.Tensor
        ``[N, N]`` pair weights (from :func:`pair_weights_from_confidence`).
    labels : torch.Tensor
        ``[N]`` class labels.
    q : tuple of float
        The two quantiles.

    Returns
    -------
    tuple of float
        ``(low, high)``; NaNs when the batch has no negative pair.

    Example
    -------
    >>> w = pair_weights_from_confidence(
    ...     torch.tensor([0.9, 0.9, 0.1, 0.9]), torch.tensor([0, 0, 1, 2]))
    >>> labels = torch.tensor([0, 0, 1, 2])
    >>> [round(v, 3) for v in negative_weight_percentiles(w, labels, q=(0.0, 1.0))]
    [0.158, 1.8]
    """
    labels = labels.reshape(-1)
    with torch.no_grad():
        negative = labels.unsqueeze(0) != labels.unsqueeze(1)
        values = weights.detach().float()[negative]
        if values.numel() == 0:
            return float("nan"), float("nan")
        if values.numel() > 1_000_000:  # torch.quantile's input limit is 16M
            values = values[torch.randperm(values.numel(), device=values.device)[:1_000_000]]
        low, high = torch.quantile(values, torch.tensor(q, device=values.device)).tolist()
    return low, high


class ClassAwareAttention(torch.nn.Module):
    """Class-aware attention weights for :class:`~sb_angcl.objective.losses.AngularSupConLoss`.

    Arguments
    ---------
    temperature : float or None
        Attention temperature ``T_att``. ``None`` or ``inf`` switches the
        attention off (all weights one).

    Example
    -------
    >>> caa = ClassAwareAttention(temperature=0.1)
    >>> cos = torch.rand(6, 1, 4) * 2 - 1
    >>> w = caa(cos, torch.tensor([0, 0, 1, 1, 2, 3]))
    >>> w.shape, w.requires_grad
    (torch.Size([6, 6]), False)
    """

    def __init__(self, temperature=1.0):
        super().__init__()
        if temperature is not None and not temperature > 0:
            raise ValueError(f"attention temperature must be > 0, got {temperature}")
        self.temperature = temperature

    @property
    def enabled(self):
        """False when the temperature makes every weight one."""
        return self.temperature is not None and self.temperature != float("inf")

    def extra_repr(self):
        """Shown by ``print(module)``."""
        return f"temperature={self.temperature}"

    def confidence(self, cosine_logits, labels):
        """Per-sample confidences ``a_j`` (ones when disabled).

        Arguments
        ---------
        cosine_logits : torch.Tensor
            ``[N, C]`` or ``[N, 1, C]`` cosines without margin.
        labels : torch.Tensor
            ``[N]`` or ``[N, 1]`` class indices.

        Returns
        -------
        torch.Tensor
            ``[N]`` confidences.

        Example
        -------
        >>> ClassAwareAttention(None).confidence(torch.zeros(2, 3), torch.tensor([0, 1]))
        tensor([1., 1.])
        """
        if not self.enabled:
            return torch.ones(labels.numel(), device=labels.device)
        return class_confidence(cosine_logits, labels, self.temperature)

    def forward(self, cosine_logits, labels):
        """Pair weights ``[N, N]`` for a batch (see the module docstring).

        Arguments
        ---------
        cosine_logits : torch.Tensor
            ``[N, C]`` or ``[N, 1, C]`` cosines without margin.
        labels : torch.Tensor
            ``[N]`` or ``[N, 1]`` class indices.

        Returns
        -------
        torch.Tensor
            Detached ``[N, N]`` weights.
        """
        return pair_weights_from_confidence(
            self.confidence(cosine_logits, labels), labels
        )

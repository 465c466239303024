"""Angular-margin supervised contrastive loss (AM-SupCon) with class-aware attention.

The contrastive half of the objective of Li, Mak & Meng (ICASSP 2023). For an
anchor ``i`` with positives ``P(i)`` (same speaker, ``i`` excluded) and
negatives ``N(i)``::

    cos t_ij = z_i . z_j                       (z L2-normalised)
    s_ij = cos(t_ij + m) / tau     if j in P(i) (additive angular margin)
    s_ij = cos(t_ij) / tau         if j in N(i)
    L_i  = -1/|P(i)| sum_p log( exp(s_ip) /
               (sum_p' exp(s_ip') + sum_n w_in exp(s_in)) )
    L    = mean of L_i over anchors with at least one positive

With ``m = 0`` and ``w = 1`` this is SupCon's "L_out" (Khosla et al., 2020).

Class-aware attention (after Wang et al., AAAI 2019) gives the negative-pair
weights ``w``. Each sample gets a confidence, the classifier's posterior for
its own speaker at the attention temperature, without margin and detached::

    a_j  = softmax(cos(z_j, W) / T_att)[y_j]
    w_in = |N(i)| * min(a_i, a_n) / sum_{n' in N(i)} min(a_i, a_n')

so the weights over one anchor's negatives have mean one: the attention
reshapes the denominator without changing its scale, and ambiguous (hard or
mislabelled) samples push less on the anchor. ``T_att -> inf`` gives ``w = 1``.

Where the paper and the authors' public code differ we follow the paper's
formula: the margin is an *angular* margin on the positive logits only (the
code applies it to every pair), and the weights multiply the negative terms
of the denominator (the code puts the attention inside the exponent).

Authors
 * sb-angcl contributors
"""

import logging
import math

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)


def _flatten_inputs(embeddings, labels):
    """Bring SpeechBrain's ``[N, 1, D]`` / ``[N, 1]`` shapes to ``[N, D]`` / ``[N]``."""
    if embeddings.dim() == 3:
        if embeddings.shape[1] != 1:
            raise ValueError("embeddings of shape [N, T, D] need T == 1, got "
                             f"{tuple(embeddings.shape)}; pool over time first.")
        embeddings = embeddings.squeeze(1)
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be [N, D] or [N, 1, D], got {tuple(embeddings.shape)}")
    labels = labels.reshape(-1)
    if labels.shape[0] != embeddings.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {embeddings.shape[0]} embeddings")
    return embeddings, labels


def additive_angular_margin(cosine, margin):
    """``cos(theta + m)``, with the ArcFace fallback ``cos(theta) - m sin(m)`` beyond ``pi``.

    The fallback (as in SpeechBrain's ``AdditiveAngularMargin(easy_margin=False)``)
    keeps the result decreasing as ``theta`` grows.
    """
    if margin == 0:
        return cosine
    cos_m, sin_m = math.cos(margin), math.sin(margin)
    # sin(theta) from the cosine; the clamp keeps the gradient finite for
    # identical vectors (d sin / d cos is unbounded at theta = 0).
    sine = torch.sqrt((1.0 - cosine * cosine).clamp_min(1e-6))
    shifted = cosine * cos_m - sine * sin_m
    threshold = math.cos(math.pi - margin)
    fallback = cosine - math.sin(math.pi - margin) * margin
    return torch.where(cosine > threshold, shifted, fallback)


def class_confidence(cosine_logits, labels, temperature):
    """``a_j``: the posterior of each sample's own class at ``temperature``, detached, float32.

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
    """``[N, N]`` weights ``w_in`` from the confidences ``a_j``; one off the negative pairs.

    A row whose weights all underflow to zero keeps weight one.

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
        return pair.masked_fill_(same | ~usable, 1.0)


def negative_weight_spread(confidence, labels, q=(0.05, 0.95)):
    """Two quantiles of a batch's negative-pair weights: how much the attention acts.

    ``(1, 1)``: inert attention; a wide spread: some negatives are discounted,
    others count more. NaNs when the batch has no negative pair.
    """
    labels = labels.reshape(-1)
    with torch.no_grad():
        weights = pair_weights_from_confidence(confidence, labels)
        values = weights[labels.unsqueeze(0) != labels.unsqueeze(1)]
        if values.numel() == 0:
            return float("nan"), float("nan")
        if values.numel() > 1_000_000:  # torch.quantile's input limit is 16M
            values = values[torch.randperm(values.numel(), device=values.device)[:1_000_000]]
        low, high = torch.quantile(values, torch.tensor(q, device=values.device)).tolist()
    return low, high


class AngularSupConLoss(torch.nn.Module):
    """AM-SupCon, with class-aware attention on the negatives when ``attention_temperature`` is set.

    Embeddings are L2-normalised here and the loss is computed in float32
    (float64 stays float64) with autocast disabled; the log-sum-exp keeps it
    stable for temperatures down to 0.01. Anchors without a positive are left
    out of the mean; a batch with no positive pair gives a zero that keeps the
    graph (and one warning). ``margin``: ``m`` in radians (0: SupCon);
    ``temperature``: ``tau``; ``attention_temperature``: ``T_att`` (None or
    inf: every weight one).

    Example
    -------
    >>> loss_fn = AngularSupConLoss(margin=0.2, temperature=0.07, attention_temperature=1 / 30)
    >>> emb = torch.randn(8, 1, 16, requires_grad=True)
    >>> spk = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]).unsqueeze(1)
    >>> confidence = loss_fn.confidence(torch.rand(8, 1, 4), spk)
    >>> loss = loss_fn(emb, spk, confidence)
    >>> loss.backward()
    >>> loss.dim(), bool(loss > 0), emb.grad.shape
    (0, True, torch.Size([8, 1, 16]))
    """

    def __init__(self, margin=0.2, temperature=0.07, attention_temperature=None):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0 <= margin < math.pi:
            raise ValueError(f"margin must be in [0, pi) radians, got {margin}")
        if attention_temperature is not None and not attention_temperature > 0:
            raise ValueError(f"attention temperature must be > 0, got {attention_temperature}")
        self.margin = float(margin)
        self.temperature = float(temperature)
        self.attention_temperature = attention_temperature
        self._warned = set()

    @property
    def attention(self):
        """Whether class-aware attention weights the negatives."""
        return self.attention_temperature not in (None, float("inf"))

    def extra_repr(self):
        """Shown by ``print(module)``."""
        return (
            f"margin={self.margin}, temperature={self.temperature}, "
            f"attention_temperature={self.attention_temperature}"
        )

    def confidence(self, cosine_logits, labels):
        """The confidences ``a_j`` from the classifier's cosines (no margin); None without attention."""
        if not self.attention:
            return None
        return class_confidence(cosine_logits, labels, self.attention_temperature)

    def _warn_once(self, key, message):
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message)

    def forward(self, embeddings, labels, confidence=None):
        """The loss of ``[N(, 1), D]`` embeddings, ``[N]`` labels and confidences (or None)."""
        embeddings, labels = _flatten_inputs(embeddings, labels)
        dtype = torch.float64 if embeddings.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            z = F.normalize(embeddings.to(dtype), dim=1)
            same = labels.unsqueeze(0) == labels.unsqueeze(1)
            if bool(same.all()):
                self._warn_once("negatives", (
                    "A training batch holds a single speaker: the contrastive loss "
                    "has no negatives in it (only positives are pulled together)."))
            rows, cols = torch.nonzero(same.fill_diagonal_(False), as_tuple=True)
            if rows.numel() == 0:
                self._warn_once("positives", (
                    "AngularSupConLoss: a batch has no positive pair (every "
                    "speaker appears once); its contrastive loss is 0. Use "
                    "the speaker-balanced sampler or augmented views."))
                return embeddings.sum() * 0.0
            same.fill_diagonal_(True)  # now: positives and the anchor itself
            n = labels.shape[0]
            pos_count = torch.bincount(rows, minlength=n)
            anchors = pos_count > 0
            all_anchors = bool(anchors.all())

            cosine = z @ z.t()
            # Positive logits with the angular margin, computed on the positive
            # pairs only (a full-matrix margin would cost several N x N passes).
            pos_logits = (
                additive_angular_margin(cosine[rows, cols].clamp(-1.0, 1.0), self.margin)
                / self.temperature
            )
            logits = cosine / self.temperature
            if confidence is not None:
                # w multiplies exp(s_in): log w joins the negative logits.
                weights = pair_weights_from_confidence(confidence, labels)
                logits = logits + torch.log(weights.to(dtype))
            # Denominator terms: negatives (weighted) and the margin positives.
            terms = logits.masked_fill(same, -math.inf).index_put((rows, cols), pos_logits)
            if not all_anchors:
                # Rows without a positive take no part (and could be all -inf).
                terms = terms[anchors]
                rows = (torch.cumsum(anchors, 0) - 1)[rows]
                pos_count = pos_count[anchors]
            # torch.logsumexp subtracts the row maximum internally.
            log_denominator = torch.logsumexp(terms, dim=1)
            log_prob = pos_logits - log_denominator[rows]
            per_anchor = torch.zeros_like(log_denominator).index_add(0, rows, log_prob)
            return -(per_anchor / pos_count).mean()


class ProjectionHead(torch.nn.Module):
    """Where AM-SupCon looks at the embedding: a small MLP, or the embedding itself.

    SupCon (Khosla et al., 2020) computes its loss on a projection
    ``Linear -> ReLU -> Linear`` of the representation, so the contrastive
    geometry (a sharp temperature, few negatives per batch) need not be the
    one the verification scores see. ``output_size = 0``: the identity, the
    loss acts on the speaker embedding (the paper's setting).

    Example
    -------
    >>> ProjectionHead(8, 4)(torch.randn(5, 1, 8)).shape
    torch.Size([5, 4])
    >>> ProjectionHead(8, 0)(torch.randn(5, 1, 8)).shape
    torch.Size([5, 8])
    """

    def __init__(self, input_size, output_size=0):
        super().__init__()
        self.mlp = None
        if output_size:
            self.mlp = torch.nn.Sequential(
                torch.nn.Linear(input_size, input_size),
                torch.nn.ReLU(),
                torch.nn.Linear(input_size, output_size),
            )

    def forward(self, embeddings):
        """``[N, D]`` or ``[N, 1, D]`` embeddings to ``[N, output_size or D]``."""
        flat = embeddings.reshape(embeddings.shape[0], -1)
        return flat if self.mlp is None else self.mlp(flat)

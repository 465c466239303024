"""Angular-margin supervised contrastive loss (AM-SupCon).

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

Where the paper and the authors' public code differ we follow the paper's
formula: the margin is an *angular* margin on the positive logits only (the
code applies it to every pair), and the class-aware weights multiply the
negative terms of the denominator (the code puts them inside the exponent).

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
            raise ValueError(
                "embeddings of shape [N, T, D] need T == 1, got "
                f"{tuple(embeddings.shape)}; pool over time first."
            )
        embeddings = embeddings.squeeze(1)
    if embeddings.dim() != 2:
        raise ValueError(
            f"embeddings must be [N, D] or [N, 1, D], got {tuple(embeddings.shape)}"
        )
    labels = labels.reshape(-1)
    if labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"{labels.shape[0]} labels for {embeddings.shape[0]} embeddings"
        )
    return embeddings, labels


def pair_masks(labels):
    """Positive and negative pair masks of a batch.

    Arguments
    ---------
    labels : torch.Tensor
        Class labels, shape ``[N]``.

    Returns
    -------
    positives : torch.Tensor
        Bool ``[N, N]``, True where ``j != i`` has the label of ``i``.
    negatives : torch.Tensor
        Bool ``[N, N]``, True where ``j`` has another label than ``i``.

    Example
    -------
    >>> pos, neg = pair_masks(torch.tensor([0, 0, 1]))
    >>> pos.int().tolist()
    [[0, 1, 0], [1, 0, 0], [0, 0, 0]]
    >>> neg.int().tolist()
    [[0, 0, 1], [0, 0, 1], [1, 1, 0]]
    """
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def additive_angular_margin(cosine, margin):
    """``cos(theta + m)`` with the ArcFace fallback beyond ``pi``.

    Where ``theta + m > pi`` the value ``cos(theta) - m * sin(m)`` is used
    instead (as SpeechBrain's ``AdditiveAngularMargin(easy_margin=False)``
    does), so the result keeps decreasing as ``theta`` grows.

    Arguments
    ---------
    cosine : torch.Tensor
        Cosine similarities in ``[-1, 1]``.
    margin : float
        Additive angular margin ``m`` in radians.

    Returns
    -------
    torch.Tensor
        The margin-penalised cosines, same shape as ``cosine``.

    Example
    -------
    >>> c = torch.tensor([1.0, 0.0, -1.0])
    >>> additive_angular_margin(c, 0.0)
    tensor([ 1.,  0., -1.])
    >>> out = additive_angular_margin(c, 0.2)
    >>> bool(out[1] < 0) and bool(out[0] < 1)
    True
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


class AngularSupConLoss(torch.nn.Module):
    """Supervised contrastive loss with an additive angular margin.

    Implements AM-SupCon (see the module docstring). Embeddings are
    L2-normalised here and the loss is computed in float32 (float64 stays
    float64) with autocast disabled, so it is safe under mixed precision.
    The log-sum-exp of each row has its maximum subtracted, which keeps it
    stable for temperatures down to 0.01.

    Anchors without a positive in the batch are left out of the mean. A batch
    with no positive pair at all returns a zero that keeps the graph (and
    logs one warning), so training code needs no special case.

    Arguments
    ---------
    margin : float
        Additive angular margin ``m`` (radians) on every positive logit.
        ``0`` gives plain SupCon.
    temperature : float
        Temperature ``tau``.

    Example
    -------
    >>> loss_fn = AngularSupConLoss(margin=0.2, temperature=0.07)
    >>> emb = torch.randn(8, 1, 16, requires_grad=True)
    >>> spk = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]).unsqueeze(1)
    >>> loss = loss_fn(emb, spk)
    >>> loss.backward()
    >>> loss.dim(), bool(loss > 0), emb.grad.shape
    (0, True, torch.Size([8, 1, 16]))
    """

    def __init__(self, margin=0.2, temperature=0.07):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0 <= margin < math.pi:
            raise ValueError(f"margin must be in [0, pi) radians, got {margin}")
        self.margin = float(margin)
        self.temperature = float(temperature)
        self._warned_no_positive = False

    def extra_repr(self):
        """Shown by ``print(module)``."""
        return f"margin={self.margin}, temperature={self.temperature}"

    def forward(self, embeddings, labels, pair_weights=None):
        """Compute the loss of one batch.

        Arguments
        ---------
        embeddings : torch.Tensor
            ``[N, D]`` or ``[N, 1, D]``; need not be normalised.
        labels : torch.Tensor
            ``[N]`` or ``[N, 1]`` speaker labels.
        pair_weights : torch.Tensor, optional
            ``[N, N]`` non-negative weights ``w_in`` of the negative pairs
            (e.g. from :class:`sb_angcl.objective.attention.ClassAwareAttention`).
            Entries at non-negative pairs are ignored. ``None`` means 1.

        Returns
        -------
        torch.Tensor
            The scalar loss.
        """
        embeddings, labels = _flatten_inputs(embeddings, labels)
        dtype = torch.float64 if embeddings.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            z = F.normalize(embeddings.to(dtype), dim=1)
            same = labels.unsqueeze(0) == labels.unsqueeze(1)
            rows, cols = torch.nonzero(same.fill_diagonal_(False), as_tuple=True)
            if rows.numel() == 0:
                if not self._warned_no_positive:
                    logger.warning(
                        "AngularSupConLoss: a batch has no positive pair (every "
                        "speaker appears once); its contrastive loss is 0. Use "
                        "the speaker-balanced sampler or augmented views."
                    )
                    self._warned_no_positive = True
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
            if pair_weights is not None:
                # w multiplies exp(s_in): log w joins the negative logits;
                # log 0 = -inf removes a negative from the denominator.
                logits = logits + torch.log(pair_weights.to(dtype))
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
    ``Linear -> ReLU -> Linear`` of the representation and keeps the
    representation for downstream use, so the contrastive geometry (a
    sharp temperature, few negatives per batch) need not be the one the
    verification scores see. With ``output_size = 0`` the head is the
    identity and the loss acts on the speaker embedding (the paper's setting).

    Arguments
    ---------
    input_size : int
        Embedding size.
    output_size : int
        Projection size; ``0`` = no head.

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

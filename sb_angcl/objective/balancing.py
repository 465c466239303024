"""Balancing the classification and contrastive objectives.

Total loss ``alpha * L_cls + (1 - alpha) * L_con`` with ``alpha`` from one of:

* ``fixed``: a constant (``contrastive_weight`` is ``1 - alpha``);
* ``mgda_ub``: the two-task min-norm problem of MGDA (Sener & Koltun, NeurIPS
  2018) on the gradients with respect to the *shared representation* (the
  speaker embedding): two ``autograd.grad`` calls through the heads, as in the
  authors' code;
* ``mgda``: the same problem on the gradients with respect to the shared
  *encoder parameters* (exact MGDA; two extra backward passes).

The min-norm problem ``min_a ||a g1 + (1 - a) g2||^2`` over ``a in [0, 1]``
has the closed form::

    a = clip( ((g2 - g1) . g2) / ||g1 - g2||^2, 0, 1 )

The authors' ``MTL.py`` divides by ``||g1 - g2||`` (a missing square); we use
the exact solution. Min-norm favours the objective with the *smaller*
gradient, so with AAM-softmax at scale 30 ``alpha`` sits near 0 (measured:
0.03) and the encoder is trained by the contrastive loss alone. Three
additions, each off by default, keep both objectives in play:

* ``normalization: loss`` (Sener & Koltun's ``n_t = L_t``): the problem is
  solved on ``g_t / n_t`` and ``alpha`` weights the *raw* losses. (Their
  ``l2`` normaliser is not offered: two unit vectors always meet at
  ``alpha = 1/2``, i.e. ``fixed`` with weight 0.5.);
* ``alpha_min`` / ``alpha_max``: bounds applied after the solve (e.g.
  ``alpha_min: 0.3`` never gives AAM-softmax less than 30 %);
* ``alpha_smoothing``: ``alpha_t = beta alpha_{t-1} + (1 - beta) alpha_hat_t``
  before the bounds; the average is a checkpointed buffer.

Under DDP the dot products are summed over ranks for ``mgda_ub`` (disjoint
samples) and the parameter gradients themselves for ``mgda`` (shared
parameters), so every replica applies the single-process ``alpha``
(docs/multi_gpu.md). Gradients are taken of the losses times the GradScaler
scale (fp16 would underflow); ``alpha`` does not depend on that scale.

Authors
 * sb-angcl contributors
"""

import logging
import math
from typing import NamedTuple

import torch

from sb_angcl.objective.distributed import all_reduce_sum, world_size

logger = logging.getLogger(__name__)

BALANCING_STRATEGIES = ("fixed", "mgda_ub", "mgda")
GRADIENT_NORMALIZATIONS = ("none", "loss")


def _sum_flat_gradients(grads1, grads2, inputs):
    """Two gradient lists as flat vectors summed over ranks (one all-reduce; None as zeros)."""
    wide = any(p.dtype == torch.float64 for p in inputs)
    dtype = torch.float64 if wide else torch.float32
    flat = [
        (g if g is not None else torch.zeros_like(p)).reshape(-1).to(dtype)
        for grads in (grads1, grads2)
        for g, p in zip(grads, inputs)
    ]
    flat = all_reduce_sum(torch.cat(flat)) if flat else torch.zeros(0, dtype=dtype)
    half = flat.numel() // 2
    return [flat[:half]], [flat[half:]]


def min_norm_alpha_from_dots(g11, g12, g22):
    """The weight ``alpha`` in ``[0, 1]`` of ``g1`` (float64) from ``g1.g1``, ``g1.g2``, ``g2.g2``.

    ``g1 == g2`` (every ``alpha`` optimal) and non-finite dots give ``0.5``.

    Example
    -------
    >>> float(min_norm_alpha_from_dots(1.0, 0.0, 1.0))  # orthogonal, equal norm
    0.5
    >>> float(min_norm_alpha_from_dots(1.0, 2.0, 4.0))  # g2 = 2 g1: all on g1
    1.0
    """
    g11, g12, g22 = (torch.as_tensor(v, dtype=torch.float64) for v in (g11, g12, g22))
    diff_sq = g11 + g22 - 2.0 * g12
    scale = g11 + g22
    if not bool(torch.isfinite(diff_sq)) or not bool(torch.isfinite(scale)):
        return torch.tensor(0.5, dtype=torch.float64)
    if diff_sq <= 1e-12 * scale or scale == 0:
        return torch.tensor(0.5, dtype=torch.float64)
    return ((g22 - g12) / diff_sq).clamp(0.0, 1.0)


def gradient_dots(grads1, grads2):
    """Float64 ``[g11, g12, g22]`` of two gradient lists (None as zeros; float32 or wider sums).

    Example
    -------
    >>> gradient_dots([torch.tensor([1.0, 0.0])], [torch.tensor([1.0, 1.0])])
    tensor([1., 1., 2.], dtype=torch.float64)
    """
    device = None
    total = None
    for a, b in zip(grads1, grads2):
        ref = a if a is not None else b
        if ref is None:
            continue
        device = ref.device
        dtype = torch.float64 if ref.dtype == torch.float64 else torch.float32
        a = torch.zeros_like(ref, dtype=dtype) if a is None else a.to(dtype)
        b = torch.zeros_like(ref, dtype=dtype) if b is None else b.to(dtype)
        a, b = a.reshape(-1), b.reshape(-1)
        dots = torch.stack([a @ a, a @ b, b @ b]).double()
        total = dots if total is None else total + dots
    if total is None:
        total = torch.zeros(3, dtype=torch.float64, device=device)
    return total


class BalanceResult(NamedTuple):
    """A balancer's answer for one batch."""

    #: ``alpha * loss_cls + (1 - alpha) * loss_con``, with its graph.
    loss: torch.Tensor
    #: Detached float32 weight of the classification loss.
    alpha: torch.Tensor


class Balancer(torch.nn.Module):
    """What the Brain relies on in a balancer.

    :attr:`needs_parameters`: :meth:`forward` must get the shared encoder's
    parameters (``parameters=``; ``shared=`` and ``grad_scale=`` are always
    given). :attr:`uses_contrastive` False: the contrastive loss has no
    weight, and the objective trains on the classification loss alone
    (``alpha = 1``) without computing it. :meth:`forward` returns a
    :class:`BalanceResult`.

    Example
    -------
    >>> class Halves(Balancer):
    ...     def forward(self, loss_cls, loss_con, shared=None, parameters=None, grad_scale=1.0):
    ...         return BalanceResult(0.5 * loss_cls + 0.5 * loss_con, torch.tensor(0.5))
    >>> bal = Halves()
    >>> bal.needs_parameters, bal.uses_contrastive, float(bal(torch.tensor(2.0), torch.tensor(4.0)).loss)
    (False, True, 3.0)
    """

    #: Whether :meth:`forward` needs ``parameters`` (the shared encoder's).
    needs_parameters = False

    @property
    def uses_contrastive(self):
        """Whether the contrastive loss has any weight (computed and balanced)."""
        return True

    def forward(self, loss_cls, loss_con, shared=None, parameters=None, grad_scale=1.0):
        """Combine the two losses (with graphs) of one batch.

        ``shared``: the speaker embeddings both heads see; ``parameters``: the
        shared encoder's, when :attr:`needs_parameters`; ``grad_scale``: the
        GradScaler's scale (1 without one).
        """
        raise NotImplementedError


class FixedBalancer(Balancer):
    """Constant weighting ``(1 - w) * L_cls + w * L_con``, ``w = contrastive_weight`` in ``[0, 1]``.

    Example
    -------
    >>> bal = FixedBalancer(contrastive_weight=0.25)
    >>> out = bal(torch.tensor(2.0), torch.tensor(4.0))
    >>> float(out.loss), float(out.alpha)
    (2.5, 0.75)
    >>> FixedBalancer(contrastive_weight=0.0).uses_contrastive
    False
    """

    def __init__(self, contrastive_weight=0.5):
        super().__init__()
        if not 0.0 <= contrastive_weight <= 1.0:
            raise ValueError(
                f"contrastive_weight must be in [0, 1], got {contrastive_weight}"
            )
        self.contrastive_weight = float(contrastive_weight)

    @property
    def uses_contrastive(self):
        """False for ``contrastive_weight: 0`` (AAM-softmax alone)."""
        return self.contrastive_weight > 0.0

    def forward(self, loss_cls, loss_con, shared=None, parameters=None, grad_scale=1.0):
        """Combine two losses with the constant weight."""
        alpha = 1.0 - self.contrastive_weight
        loss = alpha * loss_cls + self.contrastive_weight * loss_con
        return BalanceResult(loss, torch.tensor(alpha, dtype=torch.float32))


class MGDABalancer(Balancer):
    """Min-norm (MGDA) weighting of the two objectives for every batch.

    Arguments
    ---------
    mode : str
        ``"mgda_ub"`` (gradients w.r.t. ``shared``) or ``"mgda"`` (w.r.t. ``parameters``).
    normalization : str
        ``"none"`` or ``"loss"``.
    distributed : bool
        Sum over ranks when a process group is running.
    alpha_min, alpha_max, alpha_smoothing : float
        Bounds on ``alpha`` (``0`` and ``1``: none) and the momentum ``beta``
        in ``[0, 1)`` of its moving average (``0``: none); see the module docstring.

    Example
    -------
    >>> emb = torch.randn(4, 3, requires_grad=True)
    >>> bounded = MGDABalancer("mgda_ub", alpha_min=0.3)
    >>> out = bounded((emb ** 2).sum() * 100, 0.1 * emb.sum(), shared=emb)
    >>> round(float(out.alpha), 6)
    0.3
    >>> out.loss.backward()
    """

    def __init__(
        self,
        mode="mgda_ub",
        normalization="none",
        distributed=True,
        alpha_min=0.0,
        alpha_max=1.0,
        alpha_smoothing=0.0,
    ):
        super().__init__()
        if mode not in ("mgda_ub", "mgda"):
            raise ValueError(f"mode must be 'mgda_ub' or 'mgda', got {mode!r}")
        if normalization not in GRADIENT_NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {GRADIENT_NORMALIZATIONS}, "
                f"got {normalization!r}"
            )
        if not 0.0 <= alpha_min <= alpha_max <= 1.0:
            raise ValueError(
                f"need 0 <= alpha_min <= alpha_max <= 1, got {alpha_min}, {alpha_max}"
            )
        if not 0.0 <= alpha_smoothing < 1.0:
            raise ValueError(f"alpha_smoothing must be in [0, 1), got {alpha_smoothing}")
        self.mode = mode
        self.normalization = normalization
        self.distributed = distributed
        self.alpha_min = float(alpha_min)
        self.alpha_max = float(alpha_max)
        self.alpha_smoothing = float(alpha_smoothing)
        # Moving average of alpha (NaN until the first step); a buffer, so
        # it is saved and recovered with the balancer.
        self.register_buffer("alpha_average", torch.tensor(float("nan"), dtype=torch.float64))

    @property
    def needs_parameters(self):
        """True when the solve needs the encoder parameters (``mgda``)."""
        return self.mode == "mgda"

    def extra_repr(self):
        """Shown by ``print(module)``."""
        text = f"mode={self.mode}, normalization={self.normalization}"
        if (self.alpha_min, self.alpha_max) != (0.0, 1.0):
            text += f", alpha_min={self.alpha_min}, alpha_max={self.alpha_max}"
        if self.alpha_smoothing:
            text += f", alpha_smoothing={self.alpha_smoothing}"
        return text

    def _gradients(self, loss, inputs, grad_scale):
        if not loss.requires_grad:
            return [None] * len(inputs)
        grads = torch.autograd.grad(
            loss * grad_scale, inputs, retain_graph=True, allow_unused=True
        )
        return [None if g is None else g.float() / grad_scale for g in grads]

    def solve(self, g11, g12, g22, losses):
        """``alpha`` before smoothing and bounds, from the (rank-summed) dots and loss values.

        Example
        -------
        >>> MGDABalancer(normalization="loss").solve(900.0, 0.0, 1.0, [30.0, 1.0])
        0.5
        """
        if g11 == 0.0 or g22 == 0.0:
            # One objective is flat on this batch (e.g. no positive pair):
            # the min-norm answer would stop learning, so all weight goes to
            # the other objective.
            return 1.0 if g22 == 0.0 else 0.0
        if self.normalization == "loss":
            n1, n2 = (max(abs(v), 1e-12) for v in losses)
        else:
            n1 = n2 = 1.0
        return float(min_norm_alpha_from_dots(g11 / n1**2, g12 / (n1 * n2), g22 / n2**2))

    def forward(self, loss_cls, loss_con, shared=None, parameters=None, grad_scale=1.0):
        """Solve for ``alpha`` on this batch and combine the losses (:meth:`Balancer.forward`)."""
        if self.mode == "mgda_ub":
            if shared is None:
                raise ValueError("mgda_ub needs the shared embedding (shared=...)")
            inputs = [shared]
        else:
            if parameters is None:
                raise ValueError("mgda needs the shared encoder parameters")
            inputs = [p for p in parameters if p.requires_grad]
        grad_scale = float(grad_scale)
        g_cls = self._gradients(loss_cls, inputs, grad_scale)
        g_con = self._gradients(loss_con, inputs, grad_scale)
        sum_gradients = self.distributed and self.mode == "mgda" and world_size() > 1
        if sum_gradients:
            # Parameters are shared by the ranks: the global gradient is the
            # sum of the local ones, and the dots of a sum are not the sum of
            # the dots, so the gradients themselves are summed (mgda_ub's
            # per-sample embeddings are disjoint, so its dots just add up).
            g_cls, g_con = _sum_flat_gradients(g_cls, g_con, inputs)
        dots = gradient_dots(g_cls, g_con)
        losses = torch.stack([loss_cls.detach(), loss_con.detach()]).double().to(dots.device)
        if self.distributed:
            packed = losses if sum_gradients else torch.cat([dots, losses])
            packed = all_reduce_sum(packed)
            dots, losses = (dots, packed) if sum_gradients else (packed[:3], packed[3:])
        g11, g12, g22 = dots.cpu().tolist()
        alpha = self.solve(g11, g12, g22, losses.cpu().tolist())
        if self.alpha_smoothing:
            previous = float(self.alpha_average)
            if math.isfinite(previous):
                alpha = self.alpha_smoothing * previous + (1.0 - self.alpha_smoothing) * alpha
            self.alpha_average.fill_(alpha)
        alpha = min(max(alpha, self.alpha_min), self.alpha_max)
        loss = alpha * loss_cls + (1.0 - alpha) * loss_con
        return BalanceResult(loss, torch.tensor(alpha, dtype=torch.float32))


def make_balancer(
    strategy,
    contrastive_weight=0.5,
    normalization="none",
    distributed=True,
    alpha_min=0.0,
    alpha_max=1.0,
    alpha_smoothing=0.0,
):
    """A balancer from its YAML name: ``fixed`` (``contrastive_weight``), ``mgda_ub`` or ``mgda``.

    The other arguments are :class:`MGDABalancer`'s; ``fixed`` ignores them.

    Example
    -------
    >>> make_balancer("mgda_ub", alpha_min=0.25, alpha_smoothing=0.9)
    MGDABalancer(mode=mgda_ub, normalization=none, alpha_min=0.25, alpha_max=1.0, alpha_smoothing=0.9)
    """
    if strategy == "fixed":
        return FixedBalancer(contrastive_weight)
    if strategy in ("mgda_ub", "mgda"):
        return MGDABalancer(
            strategy, normalization, distributed, alpha_min, alpha_max, alpha_smoothing
        )
    raise ValueError(
        f"balancing must be one of {BALANCING_STRATEGIES}, got {strategy!r}; "
        "set it in the YAML or with --balancing=mgda_ub"
    )

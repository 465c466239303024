"""DDP: the contrastive batch gathered across ranks, and the sums MGDA needs.

SpeechBrain has no gather helper. The contrastive loss gets stronger with more
negatives, so under DDP (``torchrun --nproc_per_node=N train.py ...``) every
rank gathers the embeddings (with gradient), labels and attention confidences
of all ranks and computes the contrastive loss on the whole global batch; the
classification loss stays local (mean over the rank's own batch).

Why this reproduces single-process training on the concatenated batch
----------------------------------------------------------------------
Let ``W`` ranks hold ``n`` samples each, ``z_r`` rank ``r``'s embeddings,
``L_con`` the contrastive loss of the global batch (identical on every rank),
``l_r`` rank ``r``'s mean classification loss and ``L_cls = mean_r l_r`` the
classification loss of the global batch. Rank ``r`` back-propagates
``a * l_r + (1 - a) * L_con`` (``a`` is the balancing weight ``alpha``):

* :func:`gather_with_grad` sums, in its backward, the gradient every rank
  sends to slice ``r`` (as ``torch.distributed.nn.functional.all_gather``
  does). All ranks compute the same
  ``L_con``, so ``z_r`` receives ``W * dL_con/dz_r``.
* ``dl_r/dz_r = W * dL_cls/dz_r`` because ``L_cls`` averages ``W`` ranks.
* DDP averages parameter gradients over ranks, which divides the first sum by
  ``W``: each parameter ends with ``a * dL_cls/dθ + (1 - a) * dL_con/dθ``,
  exactly the single-process gradient on the concatenated batch.

The balancing weight must also agree, on every rank, with the single-process
one (see :mod:`sb_angcl.objective.balancing`):

* ``mgda_ub`` (gradients w.r.t. the embeddings): the rank-local gradients are
  ``W`` times the rows of the global ones, so the dot products summed over
  ranks are ``W**2`` times the global dot products. ``alpha`` is invariant to a
  common scale of both gradients, so the summed dots give the single-process
  ``alpha`` (the loss values used by ``gradient_normalization: loss`` are
  summed too, ``W`` times the global ones, which cancels the same way).
* ``mgda`` (gradients w.r.t. the shared encoder parameters): the parameters
  are shared, so the global gradient is the *sum* of the rank-local ones and a
  sum of dot products is not the dot product of the sums. The balancer
  therefore all-reduces the two flattened parameter gradients themselves
  (both come out ``W`` times the global ones) and takes the dots after that.

Batch normalisation: on GPUs SpeechBrain converts BatchNorm layers to
``SyncBatchNorm``, so batch statistics are global too. ``SyncBatchNorm`` does
not run on CPU, so with gloo on CPU the BatchNorm statistics stay per rank (the
only difference from a single process on the concatenated batch; see
:meth:`~sb_angcl.training.brain.AngularContrastiveBrain._wrap_distributed`).

Ranks must have the same local batch size (the speaker-balanced sampler
guarantees it).

Authors
 * sb-angcl contributors
"""

import torch
import torch.distributed as dist


def world_size():
    """Number of DDP ranks (1 without a process group).

    Example
    -------
    >>> world_size()
    1
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1



def _check_same_length(tensor):
    """All ranks must hold the same number of rows: say so clearly if not."""
    size = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=tensor.device)
    sizes = [torch.empty_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    sizes = [int(s) for s in sizes]
    if len(set(sizes)) > 1:
        raise RuntimeError(
            f"gather across DDP ranks needs the same local batch size on every "
            f"rank, got {sizes}. Use the speaker-balanced sampler, or set "
            "gather_across_ranks: False in the YAML."
        )


class _GatherWithGrad(torch.autograd.Function):
    """``all_gather`` along dim 0 whose backward sums the gradients over ranks.

    ``torch.distributed.nn.functional.all_gather`` does the same but is
    deprecated in recent PyTorch, and its backward needs an all-to-all that not
    every backend has. The backward here is one ``all_reduce`` of the gathered
    gradient (a few hundred kB for a batch of embeddings), then this rank's
    slice: available on gloo, NCCL and MPI alike.
    """

    @staticmethod
    def forward(ctx, tensor):
        ctx.rows = tensor.shape[0]
        ctx.rank = dist.get_rank()
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad_output):
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.rows
        return grad[start : start + ctx.rows]


def gather_with_grad(tensor):
    """Concatenate ``tensor`` from all ranks along dim 0, keeping gradients.

    The backward of the gather sums, for this rank's slice, the gradients that
    every rank computes: with the same loss on every rank, the local slice
    gets ``world_size()`` times the gradient of that loss (see the module
    docstring for why that is what DDP needs). Every rank must call it, in the
    same order, and also run the backward (all ranks compute the same loss).

    Arguments
    ---------
    tensor : torch.Tensor
        Local tensor; same shape on every rank.

    Returns
    -------
    torch.Tensor
        ``[world * N, ...]`` in rank order (the input itself without DDP).

    Example
    -------
    >>> x = torch.ones(2, 3)
    >>> gather_with_grad(x) is x
    True
    """
    if world_size() == 1:
        return tensor
    _check_same_length(tensor)
    return _GatherWithGrad.apply(tensor)


def gather_no_grad(tensor):
    """Concatenate ``tensor`` from all ranks along dim 0 (no gradient).

    Arguments
    ---------
    tensor : torch.Tensor
        Local tensor; same shape on every rank.

    Returns
    -------
    torch.Tensor
        ``[world * N, ...]`` in rank order.

    Example
    -------
    >>> gather_no_grad(torch.arange(3)).tolist()
    [0, 1, 2]
    """
    if world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def all_reduce_sum(tensor):
    """Sum ``tensor`` over ranks in place (returns it; no-op without DDP).

    Arguments
    ---------
    tensor : torch.Tensor
        Same shape and dtype on every rank.

    Returns
    -------
    torch.Tensor
        The same tensor, now holding the sum.

    Example
    -------
    >>> all_reduce_sum(torch.tensor([1.0, 2.0]))
    tensor([1., 2.])
    """
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor

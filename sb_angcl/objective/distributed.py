"""DDP: the contrastive batch gathered across ranks, and the sums MGDA needs.

SpeechBrain has no gather helper. Under DDP every rank gathers the embeddings
(with gradient), labels and attention confidences of all ranks and computes
the contrastive loss on the global batch; the classification loss stays
local. The backward of :func:`gather_with_grad` sums the gradients every rank
sends to a slice, so after DDP's averaging each parameter gets exactly the
single-process gradient on the concatenated batch; the balancers sum their dot
products (``mgda_ub``) or gradients (``mgda``) over ranks with
:func:`all_reduce_sum`, so every rank applies the single-process ``alpha``.
The derivation is in docs/multi_gpu.md. Ranks must hold the same local batch
size (the speaker-balanced sampler guarantees it).

Every function returns its input unchanged without a process group; every
rank must call them in the same order.

Authors
 * sb-angcl contributors
"""

import torch
import torch.distributed as dist


def world_size():
    """Number of DDP ranks (1 without a process group)."""
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

    Not ``torch.distributed.nn.functional.all_gather``: deprecated, and its
    backward needs an all-to-all that not every backend has; this one is an
    ``all_reduce`` (gloo, NCCL and MPI alike).
    """

    @staticmethod
    def forward(ctx, tensor):
        ctx.rows = tensor.shape[0]
        ctx.rank = dist.get_rank()
        return gather_no_grad(tensor)

    @staticmethod
    def backward(ctx, grad_output):
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.rows
        return grad[start : start + ctx.rows]


def gather_with_grad(tensor):
    """``tensor`` of every rank (same shape) concatenated along dim 0 in rank order, with gradients.

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
    """``tensor`` of every rank concatenated along dim 0 in rank order (no gradient)."""
    if world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def all_reduce_sum(tensor):
    """Sum ``tensor`` (same shape and dtype on every rank) over ranks in place; returns it."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor

"""Gathering tensors across DDP ranks for the contrastive loss.

SpeechBrain has no gather helper. The contrastive loss gets stronger with more
negatives, so under DDP every rank gathers the embeddings (with gradient),
labels and attention confidences of all ranks and computes the loss on the
whole global batch. ``torch.distributed.nn.functional.all_gather`` sums the
gradients of each slice over ranks in its backward; since every rank computes
the same global loss, each rank's embeddings receive ``world_size`` times the
gradient of the global loss, and DDP's averaging of parameter gradients turns
that back into exactly the single-process gradient of the concatenated batch.

Ranks must have the same local batch size (the speaker-balanced sampler
guarantees it; with the random sampler use ``drop_last: True``).

Authors
 * sb-angcl contributors
"""

import torch
import torch.distributed as dist


def world_size():
    """Number of DDP ranks (1 without a process group).

    Returns
    -------
    int

    Example
    -------
    >>> world_size()
    1
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def gather_with_grad(tensor):
    """Concatenate ``tensor`` from all ranks along dim 0, keeping gradients.

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
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()), dim=0)


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

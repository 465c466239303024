"""Speaker-balanced batch sampling: P speakers x K utterances per batch.

Supervised contrastive losses need a positive for every anchor, which random
batches over thousands of speakers almost never hold. The plan of an epoch
depends only on ``(seed, epoch)``, so DDP ranks agree without communicating
and SpeechBrain's ``SaveableDataLoader`` resumes mid-epoch by skipping the
batches already consumed; it is built in :mod:`sb_angcl.data.epoch_plan`.

Authors
 * sb-angcl contributors 2025
"""

import json
import logging

import numpy as np
import torch
import torch.distributed as dist
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks
from torch.utils.data import Sampler

from sb_angcl.data.epoch_plan import EpochPlanner, max_steps, session_codes, sessions_from_ids

logger = logging.getLogger(__name__)

#: Settings a checkpoint stores; a different value means a different plan.
_PLAN_SETTINGS = ("seed", "num_items", "speakers_per_batch", "utterances_per_speaker",
                  "num_replicas", "shuffle", "positives_across_sessions")


@register_checkpoint_hooks
class SpeakerBalancedBatchSampler(Sampler):
    """Batch sampler yielding ``P x K`` dataset indices: P distinct speakers, K utterances each.

    Use it as a DataLoader's ``batch_sampler``; a batch is grouped speaker by
    speaker (``[s1 x K, s2 x K, ...]``). The epoch plan, what is repeated and
    what is dropped are described in :mod:`sb_angcl.data.epoch_plan`. Call
    :meth:`set_epoch` before every epoch (``sb.Brain`` does it for its
    ``train_sampler``). Attributes: ``speakers`` (in order of first
    appearance), ``num_groups``, ``num_dropped_groups`` (the same every epoch)
    and ``num_steps`` (``== len(self)``, the same on every rank).

    The sampler splits the work between DDP ranks itself, so it must not be
    wrapped in SpeechBrain's ``DistributedSamplerWrapper``:
    :meth:`~sb_angcl.training.brain.AngularContrastiveBrain.make_dataloader`
    makes its loader unwrapped.

    Arguments
    ---------
    labels : sequence
        The speaker label (any hashable) of every dataset item, in dataset
        order; a 1-D tensor or array is accepted too.
    speakers_per_batch : int
        ``P``, distinct speakers per batch (per rank).
    utterances_per_speaker : int
        ``K``, utterances per speaker in a batch.
    seed : int
        Non-negative base seed.
    num_replicas, rank : int, optional
        DDP ranks and this rank; default from ``torch.distributed`` if it is
        initialised, else 1 and 0.
    shuffle : bool
        False gives a fixed, deterministic plan.
    sessions : sequence, optional
        The session (recording) of every item, compared within a speaker.
    positives_across_sessions : bool
        Spread each speaker's ``K`` utterances in a batch over its sessions.

    Example
    -------
    >>> labels = ["a", "a", "a", "b", "b", "c", "c", "c", "c"]
    >>> sampler = SpeakerBalancedBatchSampler(labels, 2, 2, seed=1)
    >>> sampler.set_epoch(3)
    >>> batches = list(sampler)
    >>> len(batches), [len(b) for b in batches]
    (2, [4, 4])
    >>> first = [labels[i] for i in batches[0]]
    >>> first[0] == first[1] != first[2] == first[3]  # 2 speakers x 2
    True
    >>> batches == list(sampler)  # same (seed, epoch), same plan
    True
    """

    def __init__(
        self,
        labels,
        speakers_per_batch,
        utterances_per_speaker,
        seed=0,
        num_replicas=None,
        rank=None,
        shuffle=True,
        sessions=None,
        positives_across_sessions=False,
    ):
        # Deliberately not calling Sampler.__init__(data_source): deprecated.
        if isinstance(labels, (torch.Tensor, np.ndarray)):
            labels = labels.tolist()
        labels = list(labels)
        if len(labels) == 0:
            raise ValueError(
                "SpeakerBalancedBatchSampler got an empty list of labels: "
                "pass one speaker label per dataset item."
            )
        self.speakers_per_batch = _positive_int(speakers_per_batch, "speakers_per_batch")
        self.utterances_per_speaker = _positive_int(utterances_per_speaker, "utterances_per_speaker")
        self.seed = int(seed)
        if self.seed < 0:
            raise ValueError(f"SpeakerBalancedBatchSampler: seed must be >= 0, got {seed}.")
        self.shuffle = bool(shuffle)
        self.num_replicas, self.rank = _resolve_ddp(num_replicas, rank)
        self.epoch = 0

        # Speakers in order of first appearance -> their indices (dataset order)
        speaker_to_indices = {}
        for index, label in enumerate(labels):
            speaker_to_indices.setdefault(label, []).append(index)
        self.speakers = list(speaker_to_indices.keys())
        indices = [np.asarray(idx, dtype=np.int64) for idx in speaker_to_indices.values()]
        self.num_items = len(labels)

        P, K, R = self.speakers_per_batch, self.utterances_per_speaker, self.num_replicas
        G = R * P
        num_speakers = len(self.speakers)
        if G > num_speakers:
            if R == 1:
                msg = (
                    f"SpeakerBalancedBatchSampler: speakers_per_batch={P} is larger than the "
                    f"number of speakers in the data ({num_speakers}). Lower "
                    f"speakers_per_batch to at most {num_speakers}."
                )
            else:
                msg = (
                    f"SpeakerBalancedBatchSampler: a global step needs num_replicas * "
                    f"speakers_per_batch = {R} * {P} = {G} distinct speakers, but the data "
                    f"has only {num_speakers}. Lower speakers_per_batch to at most "
                    f"{num_speakers // R} (or use fewer ranks)."
                )
            raise ValueError(msg)

        self.positives_across_sessions = bool(positives_across_sessions)
        item_session = None
        if self.positives_across_sessions:
            item_session = session_codes(sessions, labels)
        self._planner = EpochPlanner(indices, K, item_session)
        self.num_groups = self._planner.num_groups
        self.num_steps = max_steps(self._planner.group_counts, G)
        self.num_dropped_groups = self.num_groups - G * self.num_steps

        few = int((self._planner.sizes < K).sum())
        if few > 0:
            logger.warning(
                "SpeakerBalancedBatchSampler: %d of %d speakers have fewer than "
                "utterances_per_speaker=%d utterances; their utterances are repeated to "
                "fill a group of %d.", few, num_speakers, K, K,
            )
        logger.info(
            "SpeakerBalancedBatchSampler: %d items, %d speakers, %d groups of %d; %d batches "
            "of %d x %d per rank (%d ranks); %d groups (%.2f%%) dropped per epoch.",
            self.num_items, num_speakers, self.num_groups, K, self.num_steps, P, K, R,
            self.num_dropped_groups, 100.0 * self.num_dropped_groups / self.num_groups,
        )

    @classmethod
    def from_dataset(cls, dataset, key="spk_id", session_key="session", **kwargs):
        """Builds the sampler from the speaker labels of a DynamicItemDataset.

        Static keys are read from ``dataset.data`` for ``dataset.data_ids``
        without loading audio (filtered or sorted datasets work too); a
        dynamic ``key`` is computed through the pipeline. With
        ``positives_across_sessions`` the sessions come from the
        ``session_key`` column or, without it (SpeechBrain's
        ``voxceleb_prepare.py``), from ``spk--video--utt`` IDs
        (:func:`~sb_angcl.data.epoch_plan.sessions_from_ids`). ``kwargs`` go
        to the constructor.

        Example
        -------
        >>> from speechbrain.dataio.dataset import DynamicItemDataset
        >>> dataset = DynamicItemDataset({"u1": {"spk_id": "a"}, "u2": {"spk_id": "b"},
        ...                               "u3": {"spk_id": "a"}})
        >>> SpeakerBalancedBatchSampler.from_dataset(
        ...     dataset, speakers_per_batch=2, utterances_per_speaker=1).speakers
        ['a', 'b']
        """
        if not (hasattr(dataset, "data") and hasattr(dataset, "data_ids")):
            raise TypeError(
                "SpeakerBalancedBatchSampler.from_dataset expects a SpeechBrain "
                "DynamicItemDataset (with .data and .data_ids), got "
                f"{type(dataset).__name__}. For other datasets pass the labels directly: "
                "SpeakerBalancedBatchSampler(labels, ...)."
            )
        data, data_ids = dataset.data, dataset.data_ids
        if len(data_ids) == 0:
            raise ValueError(
                "SpeakerBalancedBatchSampler.from_dataset: the dataset is empty (check the "
                "manifest and any filtering)."
            )
        first = data[data_ids[0]]
        if key in first:
            try:
                labels = [data[data_id][key] for data_id in data_ids]
            except KeyError as err:
                raise ValueError(
                    f"SpeakerBalancedBatchSampler.from_dataset: item {err} has no key "
                    f"'{key}'; every row of the manifest needs it."
                ) from None
        else:
            logger.info(
                "'%s' is not a static key of the dataset; computing it through the "
                "dynamic-item pipeline.", key,
            )
            try:
                with dataset.output_keys_as([key]):
                    labels = [dataset[i][key] for i in range(len(dataset))]
            except Exception as err:
                raise ValueError(
                    f"SpeakerBalancedBatchSampler.from_dataset: the dataset has no key "
                    f"'{key}' (static keys: {sorted(first)}; error: {err!r}). Pass "
                    "key=<the speaker-label column>."
                ) from err
        if kwargs.get("positives_across_sessions") and kwargs.get("sessions") is None:
            if session_key in first:
                kwargs["sessions"] = [data[data_id][session_key] for data_id in data_ids]
            else:
                kwargs["sessions"] = sessions_from_ids(data_ids, session_key, sorted(first))
                logger.info(
                    "No '%s' column in the training manifest: sessions taken from the "
                    "'spk--video--utt' IDs (%d sessions).", session_key,
                    len(set(zip(labels, kwargs["sessions"]))),
                )
        return cls(labels, **kwargs)

    def set_epoch(self, epoch):
        """Sets the epoch (``>= 0``; ``sb.Brain`` counts from 1) of the next iteration's plan."""
        epoch = int(epoch)
        if epoch < 0:
            raise ValueError(f"set_epoch expects epoch >= 0, got {epoch}.")
        self.epoch = epoch

    def __len__(self):
        return self.num_steps

    def __iter__(self):
        P, K = self.speakers_per_batch, self.utterances_per_speaker
        lo = self.rank * P * K
        for step in self._plan_array(self.epoch):
            yield step[lo : lo + P * K].tolist()

    def global_plan(self, epoch=None):
        """All ranks' batches of an epoch (default ``self.epoch``): one index list per step.

        Rank ``r`` gets slice ``[r * P * K : (r + 1) * P * K]`` of step ``t``
        as its batch ``t``.

        Example
        -------
        >>> sampler = SpeakerBalancedBatchSampler([0, 0, 1, 1, 2, 2, 3, 3], 1, 2,
        ...                                       num_replicas=2, rank=1)
        >>> plan = sampler.global_plan()
        >>> len(plan), len(plan[0]), list(sampler)[0] == plan[0][2:]
        (2, 4, True)
        """
        epoch = self.epoch if epoch is None else int(epoch)
        return self._plan_array(epoch).tolist()

    def _plan_array(self, epoch):
        """The global plan as a (steps, R * P * K) int64 array."""
        rng = np.random.default_rng([self.seed, epoch]) if self.shuffle else None
        G = self.num_replicas * self.speakers_per_batch
        return self._planner.plan(self.num_steps, G, rng)

    @mark_as_saver
    def _save(self, path):
        state = {"epoch": self.epoch, **{name: getattr(self, name) for name in _PLAN_SETTINGS}}
        with open(path, "w", encoding="utf-8") as fo:
            json.dump(state, fo)

    @mark_as_loader
    def _recover(self, path, end_of_epoch=False):
        del end_of_epoch  # the epoch is restored either way
        with open(path, encoding="utf-8") as fi:
            state = json.load(fi)
        for name in _PLAN_SETTINGS:
            if state.get(name, False if name == "positives_across_sessions" else None) != getattr(self, name):
                logger.warning(
                    "SpeakerBalancedBatchSampler checkpoint %s has %s=%r but this sampler "
                    "has %r: the recovered epoch plan differs, so a mid-epoch resume will "
                    "not continue the same batches.", path, name, state.get(name),
                    getattr(self, name),
                )
        self.epoch = int(state["epoch"])


def _positive_int(value, name):
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(
            f"SpeakerBalancedBatchSampler: {name} must be a positive integer, got {value!r}."
        )
    return int(value)


def _resolve_ddp(num_replicas, rank):
    """Fills num_replicas / rank from torch.distributed when not given."""
    initialised = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    num_replicas = _positive_int(num_replicas, "num_replicas")
    rank = int(rank)
    if not 0 <= rank < num_replicas:
        raise ValueError(
            f"SpeakerBalancedBatchSampler: rank={rank} is outside [0, num_replicas={num_replicas})."
        )
    return num_replicas, rank

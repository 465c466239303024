"""Speaker-balanced batch sampling: P speakers x K utterances per batch.

Supervised contrastive losses need positives in every batch: each anchor
must share its speaker with at least one other sample. Plain random batches
over thousands of speakers almost never contain two utterances of the same
speaker, so this module provides :class:`SpeakerBalancedBatchSampler`, a
``batch_sampler`` for a PyTorch / SpeechBrain DataLoader that builds every
batch from ``P`` distinct speakers with ``K`` utterances each.

The plan of an epoch depends only on ``(seed, epoch)``, so that all DDP ranks
compute the same global plan without communicating, and so that
SpeechBrain's :class:`~speechbrain.dataio.dataloader.SaveableDataLoader` can
resume mid-epoch by skipping the batches already consumed. The plan itself is
numpy arithmetic (:mod:`sb_angcl.data.epoch_plan`).

Authors
 * sb-angcl contributors 2025
"""

import json
import logging

import numpy as np
import torch
import torch.distributed as dist
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)
from torch.utils.data import Sampler

from sb_angcl.data.epoch_plan import EpochPlanner, max_steps, session_codes, sessions_from_ids

logger = logging.getLogger(__name__)


@register_checkpoint_hooks
class SpeakerBalancedBatchSampler(Sampler):
    """Batch sampler yielding ``P x K`` dataset indices: P speakers, K each.

    Use it as the ``batch_sampler`` of a DataLoader. Every batch is a list of
    exactly ``speakers_per_batch * utterances_per_speaker`` dataset indices,
    grouped speaker by speaker (``[s1 x K, s2 x K, ...]``), with ``P``
    distinct speakers (no speaker twice in a batch).

    Epoch plan
    ----------
    Let ``P = speakers_per_batch``, ``K = utterances_per_speaker``,
    ``R = num_replicas`` and ``G = R * P`` (the speakers of one *global step*,
    i.e. of the batches all ranks process together). Each epoch:

    1. **Groups.** Each speaker's ``n`` utterances are shuffled and cut into
       ``ceil(n / K)`` groups of ``K``. If the last group has only
       ``r = n mod K > 0`` utterances it is topped up with ``K - r`` of the
       speaker's own utterances, re-drawn at random: if ``n >= K`` from its
       other groups without replacement (so no utterance repeats inside a
       group); if ``n < K`` the group is the speaker's ``n`` utterances
       repeated cyclically in shuffled order (each appears
       ``floor(K / n)`` or ``ceil(K / n)`` times; a single-utterance speaker
       gives that utterance ``K`` times, and different random crops or
       augmentations of it are then its positives). The number of groups,
       ``num_groups = sum(ceil(n_s / K))``, is the same in every epoch.
    2. **Steps.** The number of global steps is the largest ``T`` with
       ``sum_s min(c_s, T) >= G * T``, where ``c_s = ceil(n_s / K)`` is the
       number of groups of speaker ``s``: the most steps that can be filled
       with ``G`` distinct speakers each. It depends only on the dataset, so
       ``len()`` is exact and constant across epochs.
    3. **Dropped groups.** A speaker with more than ``T`` groups keeps only
       ``T``; then ``sum_s min(c_s, T) - G * T < G`` further groups are
       dropped, each from a speaker drawn at random in proportion to its
       groups. A speaker losing groups loses its topped-up group first, then
       random full ones. So unless one speaker owns more groups than there
       are steps, **at most G - 1 groups are dropped per epoch**, a fraction
       below ``G / num_groups``. The exact number, the same every epoch, is
       ``num_dropped_groups``.
    4. **Packing.** Steps are filled one after the other, each with ``G``
       distinct speakers drawn at random with probability proportional to
       their remaining groups (weighted sampling without replacement), except
       that a speaker whose remaining groups equal the remaining steps is
       always taken (this is what makes the packing never get stuck). Each
       chosen speaker contributes its next group. Steps are then shuffled,
       and the ``G`` speakers of each step shuffled.
    Sessions (``positives_across_sessions=True``): in step 1 a speaker's
    utterances are not cut in random order but round-robin over its
    sessions: sessions ordered by size (largest first, ties at random), then
    the first utterance of each session, the second of each session that has
    one, and so on (utterances shuffled within each session). A group of
    ``K`` consecutive utterances therefore comes from ``K`` distinct sessions
    whenever the speaker has at least ``K`` sessions with utterances left at
    that point of the round-robin. Fallback, for speakers with fewer sessions
    (or once their small sessions are used up): the group cycles through the
    sessions there are, so it holds every one of them, repeated as evenly as
    the remaining utterances allow; the topped-up last group (re-drawn at
    random) may repeat a session. Everything else (group counts, steps,
    dropping, packing, ranks, the dependence on ``(seed, epoch)`` only and
    mid-epoch resume) is unchanged.

    5. **Ranks.** Rank ``r`` takes speakers ``r*P ... (r+1)*P - 1`` of every
       global step. Hence all ranks have ``len(self) = T`` batches and no
       speaker is shared by two ranks within a step.

    Coverage: every utterance is used at least once per epoch except those
    that only appear in dropped groups (at most ``K * num_dropped_groups``
    utterances). An utterance that is neither in a dropped group nor re-drawn
    for a top-up is used exactly once; re-drawn ones are used twice (once if
    one of their two groups was dropped), and those of a speaker with
    ``n < K`` utterances ``floor(K / n)`` or ``ceil(K / n)`` times.

    Useful attributes: ``speakers`` (labels in order of first appearance),
    ``num_groups``, ``num_dropped_groups``, ``num_steps`` (``== len(self)``)
    and :meth:`global_plan` (all ranks' batches of an epoch).

    The random stream is ``numpy.random.default_rng([seed, epoch])``, so the
    plan depends only on ``(seed, epoch)`` (and the labels). Call
    :meth:`set_epoch` before every epoch, as with ``DistributedSampler``;
    ``sb.Brain`` does it for ``brain.train_sampler``. With ``shuffle=False``
    nothing is random: groups follow dataset order and each step takes the
    speakers with the most remaining groups (ties in order of first
    appearance), identically in every epoch.

    Note
    ----
    This sampler splits work between DDP ranks itself: SpeechBrain's
    ``Brain.make_dataloader`` would wrap it in a ``DistributedSamplerWrapper``
    and split the batches a second time, so
    :meth:`~sb_angcl.training.brain.AngularContrastiveBrain.make_dataloader`
    makes its loader unwrapped (registered for mid-epoch resume, the sampler
    as the Brain's ``train_sampler`` so that ``fit`` calls ``set_epoch``).
    Mid-epoch resume works because SaveableDataLoader saves the number of
    batches consumed and, on recovery, skips that many batches of this
    sampler's (identical) plan.

    Arguments
    ---------
    labels : sequence
        The speaker label (str or int, any hashable) of every dataset item,
        in dataset order. A 1-D tensor or array is accepted too.
    speakers_per_batch : int
        ``P``, distinct speakers per batch (per rank).
    utterances_per_speaker : int
        ``K``, utterances per speaker in a batch.
    seed : int
        Non-negative base seed; the plan depends only on ``(seed, epoch)``.
    num_replicas : int, optional
        Number of DDP ranks. Default: the world size of ``torch.distributed``
        if it is initialised, else 1.
    rank : int, optional
        This rank. Default: the rank of ``torch.distributed`` if it is
        initialised, else 0.
    shuffle : bool
        Whether to randomise the plan (default). ``False`` gives a fixed,
        deterministic plan (see above).
    sessions : sequence, optional
        The session (recording) label of every dataset item, in dataset
        order; only compared within a speaker. Needed by
        ``positives_across_sessions``.
    positives_across_sessions : bool
        Spread each speaker's ``K`` utterances in a batch over as many
        sessions as it has (see "Sessions" above).

    Example
    -------
    >>> labels = ["a", "a", "a", "b", "b", "c", "c", "c", "c"]
    >>> sampler = SpeakerBalancedBatchSampler(labels, 2, 2, seed=1)
    >>> len(sampler)
    2
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
        self.speakers_per_batch = _positive_int(
            speakers_per_batch, "speakers_per_batch"
        )
        self.utterances_per_speaker = _positive_int(
            utterances_per_speaker, "utterances_per_speaker"
        )
        self.seed = int(seed)
        if self.seed < 0:
            raise ValueError(
                f"SpeakerBalancedBatchSampler: seed must be >= 0, got {seed}."
            )
        self.shuffle = bool(shuffle)
        self.num_replicas, self.rank = _resolve_ddp(num_replicas, rank)
        self.epoch = 0

        # Speakers in order of first appearance -> their indices (dataset order)
        speaker_to_indices = {}
        for index, label in enumerate(labels):
            speaker_to_indices.setdefault(label, []).append(index)
        self.speakers = list(speaker_to_indices.keys())
        indices = [
            np.asarray(idx, dtype=np.int64) for idx in speaker_to_indices.values()
        ]
        self.num_items = len(labels)

        P, K, R = (
            self.speakers_per_batch,
            self.utterances_per_speaker,
            self.num_replicas,
        )
        G = R * P
        num_speakers = len(self.speakers)
        if G > num_speakers:
            if R == 1:
                msg = (
                    f"SpeakerBalancedBatchSampler: speakers_per_batch={P} is "
                    f"larger than the number of speakers in the data "
                    f"({num_speakers}). Lower speakers_per_batch to at most "
                    f"{num_speakers}."
                )
            else:
                msg = (
                    f"SpeakerBalancedBatchSampler: a global step needs "
                    f"num_replicas * speakers_per_batch = {R} * {P} = {G} "
                    f"distinct speakers, but the data has only "
                    f"{num_speakers}. Lower speakers_per_batch to at most "
                    f"{num_speakers // R} (or use fewer ranks)."
                )
            raise ValueError(msg)

        counts = np.array([len(idx) for idx in indices], dtype=np.int64)
        self.positives_across_sessions = bool(positives_across_sessions)
        item_session = None
        if self.positives_across_sessions:
            item_session = session_codes(sessions, labels)
        # Flat layouts used to build each epoch's plan with numpy.
        self._planner = EpochPlanner(indices, K, item_session)
        self.num_groups = self._planner.num_groups
        self.num_steps = max_steps(self._planner.group_counts, G)
        self.num_dropped_groups = self.num_groups - G * self.num_steps

        few = int((counts < K).sum())
        if few > 0:
            logger.warning(
                "SpeakerBalancedBatchSampler: %d of %d speakers have fewer "
                "than utterances_per_speaker=%d utterances; their "
                "utterances are repeated to fill a group of %d.",
                few,
                num_speakers,
                K,
                K,
            )
        logger.info(
            "SpeakerBalancedBatchSampler: %d items, %d speakers, %d groups "
            "of %d; %d batches of %d x %d per rank (%d ranks); %d groups "
            "(%.2f%%) dropped per epoch.",
            self.num_items,
            num_speakers,
            self.num_groups,
            K,
            self.num_steps,
            P,
            K,
            R,
            self.num_dropped_groups,
            100.0 * self.num_dropped_groups / self.num_groups,
        )

    @classmethod
    def from_dataset(cls, dataset, key="spk_id", session_key="session", **kwargs):
        """Builds the sampler from the speaker labels of a DynamicItemDataset.

        Static keys (columns of the CSV / JSON manifest) are read straight
        from ``dataset.data[data_id][key]`` for ``data_id`` in
        ``dataset.data_ids``, without loading any audio. This also works for
        filtered / sorted datasets, which share ``data`` and keep their own
        ``data_ids``. If ``key`` is a dynamic item instead, it is computed
        through the pipeline with only ``key`` requested.

        Arguments
        ---------
        dataset : speechbrain.dataio.dataset.DynamicItemDataset
            The training dataset (the one the DataLoader iterates).
        key : str
            The key holding the speaker label.
        session_key : str
            The static key holding the session label, read when
            ``positives_across_sessions=True`` (and ``sessions`` not given).
            A manifest without it (SpeechBrain's standard
            ``voxceleb_prepare.py`` writes none) gives the session through
            its IDs, ``spk--video--utt`` (:func:`sessions_from_ids`); other
            IDs are refused with an error saying what to add.
        **kwargs : dict
            Passed to the constructor (``speakers_per_batch``,
            ``utterances_per_speaker``, ``seed``, ...).

        Example
        -------
        >>> from speechbrain.dataio.dataset import DynamicItemDataset
        >>> data = {
        ...     "u1": {"wav": "a1.wav", "spk_id": "a"},
        ...     "u2": {"wav": "b1.wav", "spk_id": "b"},
        ...     "u3": {"wav": "a2.wav", "spk_id": "a"},
        ... }
        >>> dataset = DynamicItemDataset(data)
        >>> sampler = SpeakerBalancedBatchSampler.from_dataset(
        ...     dataset, speakers_per_batch=2, utterances_per_speaker=1
        ... )
        >>> sampler.speakers
        ['a', 'b']
        """
        if not (hasattr(dataset, "data") and hasattr(dataset, "data_ids")):
            raise TypeError(
                "SpeakerBalancedBatchSampler.from_dataset expects a "
                "SpeechBrain DynamicItemDataset (with .data and .data_ids), "
                f"got {type(dataset).__name__}. For other datasets pass the "
                "labels directly: SpeakerBalancedBatchSampler(labels, ...)."
            )
        data, data_ids = dataset.data, dataset.data_ids
        if len(data_ids) == 0:
            raise ValueError(
                "SpeakerBalancedBatchSampler.from_dataset: the dataset is "
                "empty (check the manifest and any filtering)."
            )
        first = data[data_ids[0]]
        if key in first:
            try:
                labels = [data[data_id][key] for data_id in data_ids]
            except KeyError as err:
                raise ValueError(
                    f"SpeakerBalancedBatchSampler.from_dataset: item {err} "
                    f"has no key '{key}'; every row of the manifest needs it."
                ) from None
        else:
            logger.info(
                "'%s' is not a static key of the dataset; computing it "
                "through the dynamic-item pipeline.",
                key,
            )
            try:
                with dataset.output_keys_as([key]):
                    labels = [dataset[i][key] for i in range(len(dataset))]
            except Exception as err:
                raise ValueError(
                    f"SpeakerBalancedBatchSampler.from_dataset: the dataset "
                    f"has no key '{key}' (static keys: {sorted(first)}; "
                    f"error: {err!r}). Pass key=<the speaker-label column>."
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
        """Sets the epoch whose plan the next iteration yields.

        Arguments
        ---------
        epoch : int
            Epoch number (any non-negative int; ``sb.Brain`` counts from 1).

        Example
        -------
        >>> sampler = SpeakerBalancedBatchSampler([0, 0, 1, 1, 2, 2], 2, 2)
        >>> sampler.set_epoch(5)
        >>> sampler.epoch
        5
        """
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
        """Returns the global plan of an epoch: one index list per step.

        Step ``t`` holds ``num_replicas * P * K`` indices, speaker group by
        speaker group; rank ``r`` gets the slice
        ``[r * P * K : (r + 1) * P * K]`` of it as its batch ``t``.

        Arguments
        ---------
        epoch : int, optional
            The epoch; default ``self.epoch``.

        Returns
        -------
        list of list of int
            ``len(self)`` steps of dataset indices.

        Example
        -------
        >>> sampler = SpeakerBalancedBatchSampler(
        ...     [0, 0, 1, 1, 2, 2, 3, 3], 1, 2, num_replicas=2, rank=1
        ... )
        >>> plan = sampler.global_plan()
        >>> len(plan), len(plan[0])
        (2, 4)
        >>> list(sampler)[0] == plan[0][2:]
        True
        """
        epoch = self.epoch if epoch is None else int(epoch)
        return self._plan_array(epoch).tolist()

    def _plan_array(self, epoch):
        """The global plan as a (steps, R * P * K) int64 array."""
        rng = np.random.default_rng([self.seed, epoch]) if self.shuffle else None
        T = self.num_steps
        G = self.num_replicas * self.speakers_per_batch
        return self._planner.plan(T, G, rng)

    @mark_as_saver
    def _save(self, path):
        state = {
            "epoch": self.epoch,
            "seed": self.seed,
            "num_items": self.num_items,
            "speakers_per_batch": self.speakers_per_batch,
            "utterances_per_speaker": self.utterances_per_speaker,
            "num_replicas": self.num_replicas,
            "shuffle": self.shuffle,
            "positives_across_sessions": self.positives_across_sessions,
        }
        with open(path, "w", encoding="utf-8") as fo:
            json.dump(state, fo)

    @mark_as_loader
    def _recover(self, path, end_of_epoch=False):
        del end_of_epoch  # the epoch is restored either way
        with open(path, encoding="utf-8") as fi:
            state = json.load(fi)
        for name in (
            "seed",
            "num_items",
            "speakers_per_batch",
            "utterances_per_speaker",
            "num_replicas",
            "shuffle",
            "positives_across_sessions",
        ):
            if state.get(name, False if name == "positives_across_sessions" else None) != getattr(self, name):
                logger.warning(
                    "SpeakerBalancedBatchSampler checkpoint %s has %s=%r but "
                    "this sampler has %r: the recovered epoch plan differs, "
                    "so a mid-epoch resume will not continue the same batches.",
                    path,
                    name,
                    state.get(name),
                    getattr(self, name),
                )
        self.epoch = int(state["epoch"])


def _positive_int(value, name):
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(
            f"SpeakerBalancedBatchSampler: {name} must be a positive "
            f"integer, got {value!r}."
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
            f"SpeakerBalancedBatchSampler: rank={rank} is outside "
            f"[0, num_replicas={num_replicas})."
        )
    return num_replicas, rank

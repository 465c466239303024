"""The epoch plan of the speaker-balanced sampler: which utterances each P x K batch takes.

With ``P`` speakers per batch, ``K`` utterances each, ``R`` ranks and
``G = R * P`` speakers per global step, every epoch (:meth:`EpochPlanner.plan`):

1. **Groups.** A speaker's ``n`` utterances are shuffled and cut into
   ``c = ceil(n / K)`` groups of ``K``. A last group of ``r < K`` is topped up
   with ``K - r`` of its other utterances (drawn without replacement), or, if
   ``n < K``, is its utterances repeated cyclically. With sessions
   (``positives_across_sessions``) the utterances are cut round-robin over
   the speaker's sessions (largest first, ties at random), so a group spans
   ``K`` sessions wherever the speaker has them left.
2. **Steps.** ``T`` (:func:`max_steps`) is the largest with
   ``sum_s min(c_s, T) >= G * T``; it depends only on the data, so the
   sampler's ``len()`` is exact and constant.
3. **Dropped groups.** A speaker keeps at most ``T`` groups; the
   ``sum_s min(c_s, T) - G * T < G`` left over are dropped from speakers
   drawn in proportion to their groups, topped-up groups first. Unless one
   speaker has more groups than there are steps, at most ``G - 1`` groups
   are dropped per epoch; every other utterance is used.
4. **Packing.** Each step takes ``G`` distinct speakers by weighted sampling
   without replacement over their remaining groups, a speaker whose
   remaining groups equal the remaining steps always taken (so the packing
   never gets stuck); steps, and the speakers of each step, are shuffled.
5. **Ranks.** Rank ``r`` takes speakers ``r*P ... (r+1)*P - 1`` of every step.

Without a generator (``shuffle=False``) the plan is fixed: dataset order,
the speakers with the most remaining groups first.

Authors
 * sb-angcl contributors 2025
"""

import numpy as np
import torch


class EpochPlanner:
    """Flat numpy layout of a labelled dataset, and the plans built from it.

    Arguments
    ---------
    indices : list of numpy.ndarray
        Per speaker (in order of first appearance), its dataset indices.
    K : int
        The size of a group.
    item_session : numpy.ndarray, optional
        Every item's (speaker, session) code (:func:`session_codes`); None
        for groups regardless of sessions.

    Example
    -------
    >>> planner = EpochPlanner([np.array([0, 1, 2]), np.array([3])], 2)
    >>> planner.group_counts.tolist(), planner.num_groups
    ([2, 1], 3)
    """

    def __init__(self, indices, K, item_session=None):
        self.K = K
        num_speakers = len(indices)
        counts = np.array([len(idx) for idx in indices], dtype=np.int64)
        self.group_counts = -(-counts // K)  # ceil(n / K)
        self.num_groups = int(self.group_counts.sum())
        self.sizes = counts
        self.item_offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.group_offsets = np.concatenate([[0], np.cumsum(self.group_counts)[:-1]])
        self.items_by_speaker = np.concatenate(indices)
        self.item_speaker = np.empty(len(self.items_by_speaker), dtype=np.int64)
        self.item_speaker[self.items_by_speaker] = np.repeat(
            np.arange(num_speakers), counts
        )
        self.item_session = item_session

    def plan(self, T, G, rng=None):
        """The ``T`` steps of ``G`` groups of one epoch as a (T, G * K) int64 array.

        ``rng`` is the epoch's generator; None gives the fixed plan.

        Example
        -------
        >>> planner = EpochPlanner([np.array([0, 2]), np.array([1, 3])], 2)
        >>> planner.plan(1, 2).tolist()
        [[0, 2, 1, 3]]
        """
        table = self._make_groups(rng)
        counts = self._kept_group_counts(T, G, rng)

        speakers = np.empty((T, G), dtype=np.int64)
        for t, remaining in enumerate(range(T, 0, -1)):
            chosen = self._choose_speakers(counts, remaining, G, rng)
            counts[chosen] -= 1
            speakers[t] = chosen
        if rng is not None:
            speakers = speakers[rng.permutation(T)]

        # The j-th appearance of speaker s takes its j-th group (table row
        # group_offsets[s] + j); groups are already in random order.
        flat = speakers.ravel()
        by_speaker = np.argsort(flat, kind="stable")
        sorted_spk = flat[by_speaker]
        run_start = np.searchsorted(sorted_spk, sorted_spk, side="left")
        rank_in_run = np.empty_like(flat)
        rank_in_run[by_speaker] = np.arange(len(flat)) - run_start
        rows = self.group_offsets[flat] + rank_in_run
        return table[rows].reshape(T, -1)

    def _make_groups(self, rng):
        """All groups of the epoch as a (num_groups, K) table.

        Speaker ``s`` owns ``ceil(n_s / K)`` rows from ``group_offsets[s]``:
        full groups, then the topped-up one (the first to go).
        """
        K = self.K
        codes = self.item_speaker
        if self.item_session is not None:
            items = self._round_robin(rng)
        elif rng is not None:
            # Sort items by speaker, randomly within each speaker.
            items = np.lexsort((rng.random(len(codes)), codes))
        else:
            items = self.items_by_speaker
        spk = codes[items]
        pos = np.arange(len(items)) - self.item_offsets[spk]
        table = np.empty((self.num_groups, K), dtype=np.int64)
        table[self.group_offsets[spk] + pos // K, pos % K] = items
        # Top up each speaker's last, incomplete group with its own items.
        sizes = self.sizes
        for s in np.nonzero(sizes % K)[0]:
            n, r = int(sizes[s]), int(sizes[s] % K)
            own = items[self.item_offsets[s] : self.item_offsets[s] + n]
            last = self.group_offsets[s] + n // K
            if n < K:
                table[last] = np.resize(own, K)  # cyclic repetition
            elif rng is not None:
                pick = rng.choice(n - r, K - r, replace=False)
                table[last, r:] = own[pick]
            else:
                table[last, r:] = own[: K - r]
        return table

    def _round_robin(self, rng):
        """Items sorted by speaker, then round-robin over the speaker's sessions."""
        codes, sess = self.item_speaker, self.item_session
        n = len(codes)
        tie = rng.random(n) if rng is not None else np.arange(n, dtype=np.float64)
        # position of each item within its session (random order)
        by_session = np.lexsort((tie, sess))
        first = np.searchsorted(sess[by_session], sess[by_session], side="left")
        rank = np.empty(n, dtype=np.int64)
        rank[by_session] = np.arange(n) - first
        # sessions of a speaker ordered by size, largest first, ties at random
        num_sessions = int(sess.max()) + 1
        size = np.bincount(sess, minlength=num_sessions)
        stie = rng.random(num_sessions) if rng is not None else np.arange(num_sessions) / num_sessions
        session_order = np.empty(num_sessions, dtype=np.int64)
        session_order[np.lexsort((stie, -size))] = np.arange(num_sessions)
        return np.lexsort((session_order[sess], rank, codes))

    def _kept_group_counts(self, T, G, rng):
        """Groups used per speaker: its first ones, at most T each, G * T in total."""
        counts = np.minimum(self.group_counts, T)
        excess = int(counts.sum()) - G * T
        if excess > 0:
            owners = np.repeat(np.arange(len(counts)), counts)
            if rng is not None:
                picked = owners[rng.choice(len(owners), excess, replace=False)]
            else:
                picked = owners[len(owners) - excess :]
            counts = counts - np.bincount(picked, minlength=len(counts))
        return counts

    @staticmethod
    def _choose_speakers(counts, remaining, G, rng):
        """Picks G distinct speakers for one step, keeping the rest packable.

        Invariant: sum(counts) == G * remaining and counts <= remaining.
        Speakers with counts == remaining must be taken now; any other
        choice of distinct speakers keeps the invariant for the next step.
        """
        if rng is None:
            return np.argsort(-counts, kind="stable")[:G]
        must = np.nonzero(counts == remaining)[0]
        free = np.nonzero((counts > 0) & (counts < remaining))[0]
        need = G - len(must)
        if need > 0:
            # Weighted sampling without replacement (exponential keys).
            keys = rng.exponential(size=len(free)) / counts[free]
            pick = free[np.argpartition(keys, need - 1)[:need]]
            chosen = np.concatenate([must, pick])
        else:
            chosen = must
        return chosen[rng.permutation(len(chosen))]


#: Separator of SpeechBrain's VoxCeleb utterance IDs, ``spk--video--utt``
#: (``spk--video--utt_<start>_<stop>`` for its fixed-length chunks).
ID_SEPARATOR = "--"


def session_from_id(utt_id):
    """The video part of a ``spk--video--utt`` ID (SpeechBrain's VoxCeleb IDs), or None.

    Example
    -------
    >>> session_from_id("id10001--1zcIwhmdeo4--00001_0.0_3.0")
    '1zcIwhmdeo4'
    >>> session_from_id("id10001/1zcIwhmdeo4/00001") is None
    True
    """
    parts = str(utt_id).split(ID_SEPARATOR)
    if len(parts) < 3 or not all(parts[:3]):
        return None
    return parts[1]


def sessions_from_ids(data_ids, session_key="session", columns=None):
    """The session of every ID, parsed from ``spk--video--utt`` IDs.

    For a manifest without a ``session_key`` column; the error for an ID
    without a video part names the ``columns`` there are.

    Example
    -------
    >>> sessions_from_ids(["s1--v1--00001", "s1--v2--00001_0.0_3.0"])
    ['v1', 'v2']
    """
    sessions = []
    for data_id in data_ids:
        session = session_from_id(data_id)
        if session is None:
            found = f" (columns: {columns})" if columns else ""
            raise ValueError(
                "positives_across_sessions=True needs the session of every training "
                f"utterance: the manifest has no '{session_key}' column{found}, and the ID "
                f"{data_id!r} is not of the form spk{ID_SEPARATOR}video{ID_SEPARATOR}utt "
                "(SpeechBrain's VoxCeleb IDs), so no session can be read from it. Add a "
                f"'{session_key}' column to the training manifest (the recording each "
                "utterance comes from), or set positives_across_sessions: False."
            )
        sessions.append(session)
    return sessions


def session_codes(sessions, labels):
    """Integer code of every item's (speaker, session) pair."""
    if sessions is None:
        raise ValueError(
            "SpeakerBalancedBatchSampler: positives_across_sessions=True needs "
            "the session label of every item (sessions=...; from_dataset reads the "
            "manifest's 'session' column, written by the data preparation). "
            "Re-run the data preparation or set positives_across_sessions: False."
        )
    if isinstance(sessions, (torch.Tensor, np.ndarray)):
        sessions = sessions.tolist()
    sessions = list(sessions)
    if len(sessions) != len(labels):
        raise ValueError(
            f"SpeakerBalancedBatchSampler: got {len(sessions)} session labels for "
            f"{len(labels)} items; pass one session per dataset item."
        )
    table = {}
    return np.array(
        [table.setdefault((lab, ses), len(table)) for lab, ses in zip(labels, sessions)],
        dtype=np.int64,
    )


def max_steps(group_counts, width):
    """Largest T with sum(min(c, T)) >= width * T (binary search).

    No plan of steps of ``width`` distinct speakers has more; the packing of
    :meth:`EpochPlanner.plan` reaches it.

    Example
    -------
    >>> max_steps(np.array([5, 1, 1]), 2)  # speaker 0 can't pair with itself
    2
    >>> max_steps(np.array([2, 2, 2]), 3)
    2
    """
    lo, hi = 0, int(group_counts.sum()) // width
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if int(np.minimum(group_counts, mid).sum()) >= width * mid:
            lo = mid
        else:
            hi = mid - 1
    return lo

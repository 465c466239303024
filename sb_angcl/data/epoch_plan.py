"""The epoch plan of the speaker-balanced sampler: which utterances each P x K batch takes.

:class:`EpochPlanner` lays a labelled dataset out in numpy arrays and builds
the plan of an epoch from a seeded generator: each speaker's utterances are
cut into groups of ``K`` (from distinct sessions where the speaker has them),
and each step takes ``P`` groups of distinct speakers; :func:`max_steps`
gives the number of such steps. A manifest without a ``session`` column gets
its sessions from ``spk--video--utt`` IDs (:func:`sessions_from_ids`, the
IDs SpeechBrain's VoxCeleb preparation writes).

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
        Per speaker (in order of first appearance), its dataset indices in
        dataset order.
    K : int
        Utterances per speaker in a batch (the size of a group).
    item_session : numpy.ndarray, optional
        Code of every item's (speaker, session) pair (:func:`session_codes`),
        to cut groups round-robin over sessions; None for random groups.

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
        """The global plan of one epoch as a (T, G * K) int64 array.

        Arguments
        ---------
        T : int
            Steps (:func:`max_steps` of ``group_counts`` and ``G``).
        G : int
            Distinct speakers per step (all ranks together).
        rng : numpy.random.Generator, optional
            The epoch's random stream; None for the fixed plan.

        Returns
        -------
        numpy.ndarray
            Row ``t``: the ``G`` groups of step ``t``, group after group.

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

        Speaker ``s`` owns rows ``group_offsets[s]`` to
        ``group_offsets[s] + ceil(n_s / K) - 1``: full groups of shuffled
        utterances, then the topped-up one (if any), which is therefore the
        first to go when the speaker loses groups.
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
        """Groups used per speaker: at most T each, G * T in total.

        A speaker keeps its first groups: its topped-up group is the first
        it loses, then random full ones (its utterances are shuffled).
        """
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


#: Separator of the parts of a VoxCeleb utterance ID as SpeechBrain's
#: ``recipes/VoxCeleb/voxceleb_prepare.py`` writes it: ``spk--video--utt``
#: (``spk--video--utt_<start>_<stop>`` for its fixed-length chunks).
ID_SEPARATOR = "--"


def session_from_id(utt_id):
    """The session (video) part of a ``spk--video--utt`` utterance ID.

    SpeechBrain's standard VoxCeleb preparation writes no ``session`` column;
    its IDs join the speaker, the video and the utterance (``00001``, or
    ``00001_0.0_3.0`` for a chunk) with ``--``, so the video is the second part.

    Arguments
    ---------
    utt_id : str
        The manifest's ``ID``.

    Returns
    -------
    str or None
        The video part; ``None`` when the ID has fewer than three non-empty parts.

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
    """The session of every item, parsed from ``spk--video--utt`` IDs.

    The fallback of :meth:`SpeakerBalancedBatchSampler.from_dataset` for a
    manifest without a session column (one written by SpeechBrain's standard
    ``voxceleb_prepare.py``).

    Arguments
    ---------
    data_ids : sequence of str
        The dataset's IDs.
    session_key : str
        The session column the manifest lacks (named in the error).
    columns : list of str or None
        The manifest's columns (named in the error).

    Returns
    -------
    list of str
        One session per ID.

    Raises
    ------
    ValueError
        Naming an ID that has no video part.

    Example
    -------
    >>> sessions_from_ids(["s1--v1--00001", "s1--v2--00001_0.0_3.0"])
    ['v1', 'v2']
    >>> sessions_from_ids(["utt7"])
    Traceback (most recent call last):
     ...
    ValueError: positives_across_sessions=True needs the session of every training utterance: the manifest has no 'session' column, and the ID 'utt7' is not of the form spk--video--utt (SpeechBrain's VoxCeleb IDs), so no session can be read from it. Add a 'session' column to the training manifest (the recording each utterance comes from), or set positives_across_sessions: False.
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

    Every step needs ``width`` distinct speakers, and a speaker can serve at
    most one step per group and at most ``T`` steps, so no plan has more
    steps; the packing in :meth:`EpochPlanner.plan` reaches it.

    Example
    -------
    >>> import numpy as np
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

"""Verification scoring at evaluation-set scale: embeddings, cosine, AS-norm, EER/minDCF, DET.

Everything here works on whole trial lists at once, so that a CN-Celeb1 evaluation
(3.5 million trials, 200 enrolment models, 17,777 test utterances) is scored with
AS-norm in seconds rather than the hours a per-trial loop takes:

* :class:`EmbeddingTable` holds one float32 vector per id, maps trial ids to row
  indices in one hash lookup (``pandas.Index.get_indexer``), saves and loads as
  ``<prefix>.npy`` + ``<prefix>.ids.txt`` and averages utterances into models.
* :func:`cosine_scores` L2-normalises each table once and scores every trial,
  either from blocks of the dense enrol x test score matrix (when the trial list
  is nearly a full cross product, as in CN-Celeb) or from gathered chunks of pairs
  (sparse lists, as in VoxCeleb1-O); temporary memory is bounded by ``chunk_size``.
* :class:`ASNorm` (adaptive symmetric normalisation) scores every enrol model and
  every test utterance against the cohort once, by matrix product, and keeps the
  mean and standard deviation of the ``top_k`` best cohort scores per side.
* :func:`compute_eer` and :func:`compute_min_dcf` use one sort and cumulative sums
  (O(N log N)). They use the operating points of SpeechBrain's
  ``speechbrain.utils.metric_stats.EER`` / ``minDCF`` (a trial is accepted when its
  score is strictly above the threshold, one threshold per distinct score), so the
  numbers agree with SpeechBrain's O(N^2) versions; see each function for the detail.
* :func:`metrics_table` gives EER / minDCF per condition (e.g. CN-Celeb genre),
  :func:`write_scores` writes a score file, :func:`plot_det` and
  :func:`plot_score_histogram` draw pictures (matplotlib, imported only there).

Authors
 * sb-angcl contributors 2025
"""

import logging
import os
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

logger = logging.getLogger(__name__)

#: Default bound on the number of float32 values in one temporary block (64 MiB).
DEFAULT_CHUNK_SIZE = 2**24

# Use the dense (matrix-product) path when the unique enrol x unique test matrix
# has at most this many entries per trial: a BLAS product costs far less per
# entry than gathering two vectors per trial.
_DENSE_RATIO = 16


def _as_numpy_2d(vectors):
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().cpu().numpy()
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors


def _l2_normalize(x, eps=1e-12):
    """Row-wise L2 normalisation of a float32 numpy array (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32, copy=False)


class EmbeddingTable:
    """A table of float32 embeddings, one row per id (utterance or model).

    Arguments
    ---------
    ids : sequence of str
        One unique id per row.
    vectors : numpy.ndarray or torch.Tensor
        Array of shape ``(len(ids), dim)``; stored as contiguous float32.

    Example
    -------
    >>> table = EmbeddingTable(["a", "b", "c"], [[1, 0], [0, 2], [3, 4]])
    >>> len(table), table.dim, "b" in table, "z" in table
    (3, 2, True, False)
    >>> table.indices(["c", "a", "c"]).tolist()
    [2, 0, 2]
    >>> table.normalized()["c"].tolist()
    [0.6000000238418579, 0.800000011920929]
    >>> table.average({"ab": ["a", "b"]})["ab"].tolist()
    [0.5, 1.0]
    """

    def __init__(self, ids, vectors):
        ids = [str(i) for i in ids]
        vectors = _as_numpy_2d(vectors)
        if vectors.ndim != 2:
            raise ValueError(
                f"EmbeddingTable needs a 2-D array (n_ids, dim), got shape "
                f"{vectors.shape}; stack the embeddings first (squeeze any "
                f"singleton time axis)."
            )
        if len(ids) != vectors.shape[0]:
            raise ValueError(
                f"EmbeddingTable got {len(ids)} ids but {vectors.shape[0]} "
                f"vectors; give exactly one id per row."
            )
        index = pd.Index(ids, dtype=object)
        if not index.is_unique:
            dups = pd.unique(index[index.duplicated()])
            raise ValueError(
                f"EmbeddingTable ids must be unique; {len(dups)} ids repeat, "
                f"e.g. {list(dups[:5])}."
            )
        self.ids = ids
        self.vectors = np.ascontiguousarray(vectors)
        self._index = index

    @classmethod
    def from_dict(cls, embeddings):
        """Builds a table from a ``{id: vector}`` mapping (vectors are flattened).

        Arguments
        ---------
        embeddings : Mapping
            Ids to 1-D vectors (numpy arrays, tensors or lists). Tensors of
            shape ``(1, dim)`` or ``(1, 1, dim)``, as SpeechBrain's encoders
            return them, are flattened.

        Returns
        -------
        EmbeddingTable

        Example
        -------
        >>> t = EmbeddingTable.from_dict({"u1": torch.ones(1, 1, 3), "u2": [0, 1, 0]})
        >>> t.vectors.shape
        (2, 3)
        """
        ids = list(embeddings.keys())
        rows = [_as_numpy_2d(embeddings[i]).reshape(-1) for i in ids]
        if not rows:
            return cls([], np.zeros((0, 0), dtype=np.float32))
        return cls(ids, np.stack(rows))

    # ------------------------------------------------------------------ basics
    @property
    def dim(self):
        """Embedding dimension."""
        return self.vectors.shape[1]

    def __len__(self):
        return len(self.ids)

    def __contains__(self, item):
        return str(item) in self._index

    def __getitem__(self, item):
        return self.vectors[self.indices([item])[0]]

    def __repr__(self):
        return f"EmbeddingTable({len(self)} ids, dim={self.dim})"

    def indices(self, ids):
        """Row indices of ``ids`` (vectorised hash lookup).

        Arguments
        ---------
        ids : sequence of str
            Ids to look up (may repeat, e.g. one per trial).

        Returns
        -------
        numpy.ndarray
            int64 array of row indices, same length as ``ids``.

        Raises
        ------
        KeyError
            If any id is not in the table; the message gives how many distinct
            ids are unknown and the first few.

        Example
        -------
        >>> t = EmbeddingTable(["x", "y"], np.eye(2))
        >>> t.indices(["y", "y", "x"]).tolist()
        [1, 1, 0]
        >>> t.indices(["x", "nope"])
        Traceback (most recent call last):
        ...
        KeyError: "1 unknown id(s) (of 2 looked up) not in this EmbeddingTable of 2 ids, e.g. ['nope']..."
        """
        if isinstance(ids, str):
            raise TypeError("indices() takes a sequence of ids, not one str")
        idx = self._index.get_indexer(ids)
        missing = idx < 0
        if missing.any():
            arr = np.asarray(ids, dtype=object)[missing]
            unknown = pd.unique(arr)
            raise KeyError(
                f"{len(unknown)} unknown id(s) (of {len(idx)} looked up) not in "
                f"this EmbeddingTable of {len(self)} ids, e.g. "
                f"{[str(u) for u in unknown[:5]]}. Check that the trial list and "
                f"the embeddings come from the same data set and that ids are "
                f"spelled alike (extension, speaker prefix)."
            )
        return idx.astype(np.int64, copy=False)

    def subset(self, ids):
        """A new table with only ``ids``, in that order.

        Arguments
        ---------
        ids : sequence of str
            Ids to keep.

        Returns
        -------
        EmbeddingTable

        Example
        -------
        >>> t = EmbeddingTable(["x", "y", "z"], np.eye(3))
        >>> t.subset(["z", "x"]).ids
        ['z', 'x']
        """
        ids = [str(i) for i in ids]
        return EmbeddingTable(ids, self.vectors[self.indices(ids)])

    # ------------------------------------------------------------ persistence
    def save(self, prefix):
        """Writes ``<prefix>.npy`` (float32 matrix) and ``<prefix>.ids.txt`` (one id per line).

        Arguments
        ---------
        prefix : str or path
            Path without extension; missing parent folders are created.

        Example
        -------
        >>> import tempfile
        >>> prefix = os.path.join(tempfile.mkdtemp(), "emb", "test")
        >>> EmbeddingTable(["a", "b"], np.eye(2)).save(prefix)
        >>> EmbeddingTable.load(prefix).ids
        ['a', 'b']
        """
        prefix = os.fspath(prefix)
        bad = [i for i in self.ids if "\n" in i or "\r" in i]
        if bad:
            raise ValueError(
                f"cannot save ids containing line breaks (e.g. {bad[:3]!r}) to "
                f"{prefix}.ids.txt; rename them."
            )
        folder = os.path.dirname(prefix)
        if folder:
            os.makedirs(folder, exist_ok=True)
        np.save(prefix + ".npy", self.vectors)
        with open(prefix + ".ids.txt", "w", encoding="utf-8") as f:
            f.write("".join(i + "\n" for i in self.ids))

    @classmethod
    def load(cls, prefix):
        """Reads a table written by :meth:`save`.

        Arguments
        ---------
        prefix : str or path
            The prefix given to :meth:`save`.

        Returns
        -------
        EmbeddingTable

        Example
        -------
        >>> EmbeddingTable.load("/nonexistent/emb")
        Traceback (most recent call last):
        ...
        FileNotFoundError: embedding file /nonexistent/emb.npy not found...
        """
        prefix = os.fspath(prefix)
        npy, txt = prefix + ".npy", prefix + ".ids.txt"
        for path in (npy, txt):
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"embedding file {path} not found; write the table with "
                    f"EmbeddingTable.save({prefix!r}) (it creates {npy} and {txt})."
                )
        vectors = np.load(npy, allow_pickle=False)
        with open(txt, encoding="utf-8") as f:
            ids = f.read().splitlines()
        if vectors.ndim != 2 or len(ids) != vectors.shape[0]:
            raise ValueError(
                f"{txt} lists {len(ids)} ids but {npy} holds an array of shape "
                f"{vectors.shape}; the two files are out of step, save them again."
            )
        return cls(ids, vectors)

    # ------------------------------------------------------------ transforms
    def mean(self):
        """Mean vector over all rows (float32, accumulated in float64).

        Returns
        -------
        numpy.ndarray
            Shape ``(dim,)``.

        Example
        -------
        >>> EmbeddingTable(["a", "b"], [[1, 2], [3, 4]]).mean().tolist()
        [2.0, 3.0]
        """
        if len(self) == 0:
            raise ValueError("mean() of an empty EmbeddingTable")
        return self.vectors.mean(axis=0, dtype=np.float64).astype(np.float32)

    def normalized(self):
        """A new table whose rows have unit L2 norm (zero rows stay zero).

        Returns
        -------
        EmbeddingTable

        Example
        -------
        >>> EmbeddingTable(["a"], [[3, 4]]).normalized().vectors.tolist()
        [[0.6000000238418579, 0.800000011920929]]
        """
        return EmbeddingTable(self.ids, _l2_normalize(self.vectors))

    def subtract_mean(self, mean):
        """A new table with ``mean`` subtracted from every row.

        Arguments
        ---------
        mean : array-like
            Vector of shape ``(dim,)``, e.g. ``train_table.mean()``.

        Returns
        -------
        EmbeddingTable

        Example
        -------
        >>> t = EmbeddingTable(["a", "b"], [[1, 2], [3, 4]])
        >>> t.subtract_mean(t.mean()).vectors.tolist()
        [[-1.0, -1.0], [1.0, 1.0]]
        """
        mean = _check_mean(mean, self.dim)
        return EmbeddingTable(self.ids, self.vectors - mean)

    def average(self, groups, normalize=False):
        """Averages groups of rows into one row per model (e.g. CN-Celeb enrolment).

        Works as ``table.average(groups)`` or ``EmbeddingTable.average(table, groups)``.

        Arguments
        ---------
        groups : Mapping[str, sequence of str]
            Model id to the ids of its utterances.
        normalize : bool
            L2-normalise each utterance before averaging (default: plain mean
            of the raw embeddings).

        Returns
        -------
        EmbeddingTable
            One row per model id, in the order of ``groups``.

        Example
        -------
        >>> t = EmbeddingTable(["u1", "u2", "u3"], [[2, 0], [0, 2], [4, 4]])
        >>> avg = EmbeddingTable.average(t, {"spk1": ["u1", "u2"], "spk2": ["u3"]})
        >>> avg.ids, avg.vectors.tolist()
        (['spk1', 'spk2'], [[1.0, 1.0], [4.0, 4.0]])
        """
        model_ids = [str(m) for m in groups]
        members, owner = [], []
        for k, m in enumerate(groups):
            utts = groups[m]
            if isinstance(utts, str):
                utts = [utts]
            utts = list(utts)
            if not utts:
                raise ValueError(f"average(): model {m!r} has no utterances")
            members.extend(utts)
            owner.extend([k] * len(utts))
        if not model_ids:
            return EmbeddingTable([], np.zeros((0, self.dim), dtype=np.float32))
        rows = self.vectors[self.indices(members)]
        if normalize:
            rows = _l2_normalize(rows)
        owner = torch.as_tensor(np.asarray(owner, dtype=np.int64))
        sums = torch.zeros(len(model_ids), self.dim, dtype=torch.float64)
        sums.index_add_(0, owner, torch.from_numpy(rows).double())
        counts = torch.bincount(owner, minlength=len(model_ids)).double()
        means = (sums / counts[:, None]).float().numpy()
        return EmbeddingTable(model_ids, means)


def _check_mean(mean, dim):
    if isinstance(mean, torch.Tensor):
        mean = mean.detach().cpu().numpy()
    mean = np.asarray(mean, dtype=np.float32).reshape(-1)
    if mean.shape[0] != dim:
        raise ValueError(f"mean has {mean.shape[0]} values, embeddings have dim {dim}")
    return mean


def _prepared(table, mean=None):
    """float32 torch matrix of the table's rows, mean-subtracted then L2-normalised."""
    x = table.vectors
    if mean is not None:
        x = x - _check_mean(mean, table.dim)
    return torch.from_numpy(_l2_normalize(x))


def _check_trials(enrol_ids, test_ids):
    if isinstance(enrol_ids, str) or isinstance(test_ids, str):
        raise TypeError("enrol_ids and test_ids are sequences of ids (one per trial)")
    if len(enrol_ids) != len(test_ids):
        raise ValueError(
            f"trial list is ragged: {len(enrol_ids)} enrol ids but "
            f"{len(test_ids)} test ids"
        )


def _used_rows(idx, n_rows):
    """Sorted unique values of ``idx`` and each entry's position among them (O(n))."""
    used = np.zeros(n_rows, dtype=bool)
    used[idx] = True
    uniq = np.flatnonzero(used)
    remap = np.cumsum(used) - 1
    return uniq, remap[idx]


def _cosine_from_indices(E, T, ei, ti, chunk_size, method="auto", progress=True):
    """Row-wise dot products ``E[ei] . T[ti]`` with bounded temporary memory.

    ``E`` and ``T`` are normalised float32 torch matrices; returns float64 numpy.
    """
    n = len(ei)
    out = np.empty(n, dtype=np.float64)
    if n == 0:
        return out
    dim = E.shape[1]
    ue, e_pos = _used_rows(ei, E.shape[0])
    ut, t_pos = _used_rows(ti, T.shape[0])
    if method == "auto":
        method = "dense" if len(ue) * len(ut) <= _DENSE_RATIO * n else "gather"
    if method == "dense":
        Eu, Tu_t = E[ue], T[ut].T.contiguous()
        rows = max(1, chunk_size // max(1, len(ut)))
        if rows >= len(ue):
            S = (Eu @ Tu_t).numpy()
            out[:] = S[e_pos, t_pos]
            return out
        # Group trials by enrol row so each block of rows is one slice.
        order = np.argsort(e_pos, kind="stable")
        e_sorted = e_pos[order]
        starts = np.arange(0, len(ue), rows)
        bounds = np.searchsorted(e_sorted, np.append(starts, len(ue)))
        for b, r0 in enumerate(
            tqdm(
                starts,
                desc="cosine",
                leave=False,
                disable=not progress or len(starts) < 4,
            )
        ):
            lo, hi = bounds[b], bounds[b + 1]
            if lo == hi:
                continue
            S = (Eu[r0 : r0 + rows] @ Tu_t).numpy()
            sel = order[lo:hi]
            out[sel] = S[e_sorted[lo:hi] - r0, t_pos[sel]]
        return out
    if method != "gather":
        raise ValueError(f"method must be 'auto', 'dense' or 'gather', got {method!r}")
    pairs = max(1, chunk_size // (2 * dim))
    ei_t, ti_t = torch.from_numpy(ei), torch.from_numpy(ti)
    starts = range(0, n, pairs)
    for s in tqdm(
        starts, desc="cosine", leave=False, disable=not progress or len(starts) < 4
    ):
        a = E.index_select(0, ei_t[s : s + pairs])
        b = T.index_select(0, ti_t[s : s + pairs])
        out[s : s + pairs] = (a * b).sum(dim=1).numpy()
    return out


def cosine_scores(
    enrol,
    test,
    enrol_ids,
    test_ids,
    chunk_size=DEFAULT_CHUNK_SIZE,
    mean=None,
    method="auto",
    progress=True,
):
    """Cosine score of every trial ``(enrol_ids[i], test_ids[i])``.

    Ids are mapped to rows once and each table is L2-normalised once. When the
    trial list is close to a full enrol x test cross product (CN-Celeb), the
    scores come from blocks of the dense score matrix (one BLAS product per
    block of enrol models); otherwise (VoxCeleb-style sparse lists) from
    row-wise dot products over gathered chunks of pairs.

    Arguments
    ---------
    enrol : EmbeddingTable
        Enrolment models (or utterances).
    test : EmbeddingTable
        Test utterances (may be the same table as ``enrol``).
    enrol_ids, test_ids : sequence of str
        One enrol id and one test id per trial.
    chunk_size : int
        Bound on the float32 values in one temporary block.
    mean : array-like, optional
        Subtracted from both sides before normalisation (e.g. the mean of
        training embeddings).
    method : str
        ``"auto"`` (default), ``"dense"`` or ``"gather"``.
    progress : bool
        Show a tqdm bar when there are many chunks.

    Returns
    -------
    numpy.ndarray
        float64 scores (computed in float32), one per trial.

    Example
    -------
    >>> t = EmbeddingTable(["a", "b", "c"], [[1, 0], [0, 1], [1, 1]])
    >>> cosine_scores(t, t, ["a", "a", "c"], ["b", "c", "c"]).round(4).tolist()
    [0.0, 0.7071, 1.0]
    """
    _check_trials(enrol_ids, test_ids)
    ei, ti = enrol.indices(enrol_ids), test.indices(test_ids)
    E, T = _prepared(enrol, mean), _prepared(test, mean)
    return _cosine_from_indices(E, T, ei, ti, chunk_size, method, progress)


class ASNorm:
    """Adaptive symmetric score normalisation (AS-norm) against a cohort.

    For every enrol model ``e`` and test utterance ``t`` that occurs in the
    trials, the cosine against every cohort vector is computed once (matrix
    product, chunked); the ``top_k`` highest give ``mu`` and ``sd`` (unbiased
    standard deviation, as ``torch.std`` in SpeechBrain's s-norm recipe), and

        s' = 0.5 * ((s - mu_e) / sd_e + (s - mu_t) / sd_t).

    Arguments
    ---------
    cohort : EmbeddingTable
        Cohort (impostor) embeddings, typically one per training speaker
        (see :func:`speaker_cohort`).
    top_k : int
        Number of closest cohort entries per side (clipped to the cohort size,
        with a warning); at least 2.
    chunk_size : int
        Bound on the float32 values in one temporary block.

    Example
    -------
    >>> g = torch.Generator().manual_seed(0)
    >>> table = EmbeddingTable([f"u{i}" for i in range(6)], torch.randn(6, 8, generator=g))
    >>> cohort = EmbeddingTable([f"c{i}" for i in range(20)], torch.randn(20, 8, generator=g))
    >>> raw = cosine_scores(table, table, ["u0", "u1"], ["u2", "u3"])
    >>> norm = ASNorm(cohort, top_k=5)(raw, table, table, ["u0", "u1"], ["u2", "u3"])
    >>> norm.shape
    (2,)
    """

    def __init__(self, cohort, top_k=300, chunk_size=DEFAULT_CHUNK_SIZE):
        if not isinstance(cohort, EmbeddingTable):
            raise TypeError("cohort must be an EmbeddingTable (see speaker_cohort())")
        if len(cohort) < 2:
            raise ValueError(
                f"AS-norm needs a cohort of at least 2 vectors, got {len(cohort)}"
            )
        if int(top_k) < 2:
            raise ValueError(
                f"top_k must be >= 2 (a std needs two scores), got {top_k}"
            )
        if top_k > len(cohort):
            logger.warning(
                "AS-norm top_k=%d exceeds the cohort size %d; using the whole cohort",
                top_k,
                len(cohort),
            )
        self.cohort = cohort
        self.top_k = min(int(top_k), len(cohort))
        self.chunk_size = int(chunk_size)

    def cohort_stats(self, X, C, progress=True):
        """Mean and std of the ``top_k`` cohort scores for each row of ``X``.

        Arguments
        ---------
        X : torch.Tensor
            L2-normalised float32 rows, shape ``(n, dim)``.
        C : torch.Tensor
            L2-normalised float32 cohort, shape ``(n_cohort, dim)``.
        progress : bool
            Show a tqdm bar when there are many chunks.

        Returns
        -------
        mu, sd : numpy.ndarray
            float64 arrays of shape ``(n,)``.

        Example
        -------
        >>> norm = ASNorm(EmbeddingTable(["c0", "c1", "c2"], np.eye(3)), top_k=2)
        >>> mu, sd = norm.cohort_stats(torch.eye(3)[:1], torch.eye(3))
        >>> mu.tolist(), sd.round(4).tolist()
        ([0.5], [0.7071])
        """
        n = X.shape[0]
        mu = np.empty(n, dtype=np.float64)
        sd = np.empty(n, dtype=np.float64)
        Ct = C.T.contiguous()
        rows = max(1, self.chunk_size // C.shape[0])
        starts = range(0, n, rows)
        for s in tqdm(
            starts,
            desc="AS-norm cohort",
            leave=False,
            disable=not progress or len(starts) < 4,
        ):
            S = X[s : s + rows] @ Ct
            top = torch.topk(S, self.top_k, dim=1, sorted=False).values.double()
            mu[s : s + rows] = top.mean(dim=1).numpy()
            sd[s : s + rows] = top.std(dim=1).numpy()
        return mu, sd

    def _normalize(self, scores, E, T, ei, ti, mean, progress=True):
        C = _prepared(self.cohort, mean)
        ue, e_pos = _used_rows(ei, E.shape[0])
        ut, t_pos = _used_rows(ti, T.shape[0])
        mu_e, sd_e = self.cohort_stats(E[ue], C, progress)
        mu_t, sd_t = self.cohort_stats(T[ut], C, progress)
        tiny = np.finfo(np.float64).tiny
        sd_e, sd_t = np.maximum(sd_e, tiny), np.maximum(sd_t, tiny)
        s = np.asarray(scores, dtype=np.float64)
        out = (s - mu_e[e_pos]) / sd_e[e_pos]
        out += (s - mu_t[t_pos]) / sd_t[t_pos]
        out *= 0.5
        return out

    def __call__(
        self, scores, enrol, test, enrol_ids, test_ids, mean=None, progress=True
    ):
        """Normalises raw cosine ``scores`` of the trials ``(enrol_ids, test_ids)``.

        Arguments
        ---------
        scores : array-like
            Raw cosine scores, one per trial (e.g. from :func:`cosine_scores`).
        enrol, test : EmbeddingTable
            The tables the scores were computed from.
        enrol_ids, test_ids : sequence of str
            One enrol id and one test id per trial.
        mean : array-like, optional
            Subtracted from enrol, test and cohort vectors before cosine, as in
            :func:`cosine_scores`.
        progress : bool
            Show tqdm bars on long loops.

        Returns
        -------
        numpy.ndarray
            float64 normalised scores.

        Example
        -------
        >>> cohort = EmbeddingTable(["c0", "c1", "c2"], np.eye(3))
        >>> t = EmbeddingTable(["e", "t"], [[1, 0, 0], [2, 1, 0]])
        >>> ASNorm(cohort, top_k=2)([0.9], t, t, ["e"], ["t"]).round(4).tolist()
        [0.6452]
        """
        _check_trials(enrol_ids, test_ids)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if scores.shape[0] != len(enrol_ids):
            raise ValueError(f"{scores.shape[0]} scores for {len(enrol_ids)} trials")
        ei, ti = enrol.indices(enrol_ids), test.indices(test_ids)
        E, T = _prepared(enrol, mean), _prepared(test, mean)
        return self._normalize(scores, E, T, ei, ti, mean, progress)


def as_norm(
    scores,
    enrol_ids,
    test_ids,
    enrol,
    test,
    cohort,
    top_k=300,
    mean=None,
    chunk_size=DEFAULT_CHUNK_SIZE,
):
    """Functional form of :class:`ASNorm`.

    Arguments
    ---------
    scores : array-like
        Raw cosine scores, one per trial.
    enrol_ids, test_ids : sequence of str
        One enrol id and one test id per trial.
    enrol, test : EmbeddingTable
        The tables the scores were computed from.
    cohort : EmbeddingTable
        Cohort embeddings (see :func:`speaker_cohort`).
    top_k : int
        Closest cohort entries kept per side.
    mean : array-like, optional
        Subtracted before cosine, as in :func:`cosine_scores`.
    chunk_size : int
        Bound on the float32 values in one temporary block.

    Returns
    -------
    numpy.ndarray
        float64 normalised scores.

    Example
    -------
    >>> cohort = EmbeddingTable(["c0", "c1", "c2"], np.eye(3))
    >>> t = EmbeddingTable(["e", "t"], [[1, 0, 0], [2, 1, 0]])
    >>> as_norm([0.9], ["e"], ["t"], t, t, cohort, top_k=2).round(4).tolist()
    [0.6452]
    """
    return ASNorm(cohort, top_k, chunk_size)(
        scores, enrol, test, enrol_ids, test_ids, mean
    )


def score_trials(
    enrol,
    test,
    enrol_ids,
    test_ids,
    cohort=None,
    top_k=300,
    mean=None,
    chunk_size=DEFAULT_CHUNK_SIZE,
    progress=True,
):
    """Cosine scores of a whole trial list, AS-normalised when a cohort is given.

    Same as :func:`cosine_scores` followed by :class:`ASNorm`, but ids are
    mapped and tables normalised only once.

    Arguments
    ---------
    enrol, test : EmbeddingTable
        Enrolment models and test utterances.
    enrol_ids, test_ids : sequence of str
        One enrol id and one test id per trial.
    cohort : EmbeddingTable, optional
        AS-norm cohort; ``None`` returns raw cosine scores.
    top_k : int
        AS-norm top-k.
    mean : array-like, optional
        Subtracted from all embeddings before cosine.
    chunk_size : int
        Bound on the float32 values in one temporary block.
    progress : bool
        Show tqdm bars on long loops.

    Returns
    -------
    numpy.ndarray
        float64 scores, one per trial.

    Example
    -------
    >>> t = EmbeddingTable(["a", "b"], [[1, 0], [1, 1]])
    >>> score_trials(t, t, ["a"], ["b"]).round(4).tolist()
    [0.7071]
    """
    _check_trials(enrol_ids, test_ids)
    ei, ti = enrol.indices(enrol_ids), test.indices(test_ids)
    E = _prepared(enrol, mean)
    T = E if test is enrol else _prepared(test, mean)
    scores = _cosine_from_indices(E, T, ei, ti, chunk_size, "auto", progress)
    if cohort is None:
        return scores
    norm = ASNorm(cohort, top_k, chunk_size)
    return norm._normalize(scores, E, T, ei, ti, mean, progress)


def speaker_cohort(table, spk_of_id):
    """One L2-normalised mean embedding per speaker, for use as an AS-norm cohort.

    Each utterance is L2-normalised, the utterances of a speaker averaged, and
    the average normalised again.

    Arguments
    ---------
    table : EmbeddingTable
        Utterance embeddings (e.g. of the training set).
    spk_of_id : Mapping, callable or sequence
        Speaker of each utterance: a ``{utt_id: spk}`` mapping (only those
        utterances are used), a function ``utt_id -> spk`` (applied to every
        id of ``table``) or a sequence aligned with ``table.ids``.

    Returns
    -------
    EmbeddingTable
        Ids are the speakers, in order of first appearance.

    Example
    -------
    >>> t = EmbeddingTable(["s1/a", "s1/b", "s2/a"], [[1, 0], [0, 3], [2, 2]])
    >>> c = speaker_cohort(t, lambda u: u.split("/")[0])
    >>> c.ids, c.vectors.astype(float).round(4).tolist()
    (['s1', 's2'], [[0.7071, 0.7071], [0.7071, 0.7071]])
    """
    if isinstance(spk_of_id, Mapping):
        utts = list(spk_of_id.keys())
        spks = [spk_of_id[u] for u in utts]
    elif callable(spk_of_id):
        utts = table.ids
        spks = [spk_of_id(u) for u in utts]
    else:
        spks = list(spk_of_id)
        utts = table.ids
        if len(spks) != len(table):
            raise ValueError(
                f"speaker list has {len(spks)} entries for a table of {len(table)} ids"
            )
    codes, names = pd.factorize(pd.Series(spks, dtype=object))
    groups = {str(name): [] for name in names}
    names = [str(n) for n in names]
    for u, c in zip(utts, codes):
        groups[names[c]].append(u)
    return table.average(groups, normalize=True).normalized()


# ---------------------------------------------------------------------- metrics
def _scores_labels(scores, labels):
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().numpy()
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if scores.shape[0] != labels.shape[0]:
        raise ValueError(f"{scores.shape[0]} scores but {labels.shape[0]} labels")
    if labels.dtype != bool:
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("labels must be bool or 0/1 (1 = target trial)")
        labels = labels.astype(bool)
    n_nan = int(np.isnan(scores).sum())
    if n_nan:
        raise ValueError(
            f"{n_nan} scores are NaN; fix the scoring before computing metrics"
        )
    n_tar = int(labels.sum())
    if n_tar == 0:
        raise ValueError("no target trials (label 1): EER/minDCF are undefined")
    if n_tar == labels.shape[0]:
        raise ValueError("no non-target trials (label 0): EER/minDCF are undefined")
    return scores, labels


def det_curve(scores, labels):
    """Miss and false-alarm rates at every distinct score (one sort, cumulative sums).

    A trial is accepted when its score is strictly greater than the threshold;
    equal scores are grouped, so ties never split between accept and reject.

    Arguments
    ---------
    scores : array-like
        One score per trial.
    labels : array-like
        bool or 0/1, 1 = target trial.

    Returns
    -------
    thresholds : numpy.ndarray
        The distinct scores, ascending.
    p_miss : numpy.ndarray
        Fraction of targets with score <= threshold (non-decreasing).
    p_fa : numpy.ndarray
        Fraction of non-targets with score > threshold (non-increasing).

    Example
    -------
    >>> th, p_miss, p_fa = det_curve([0.1, 0.4, 0.4, 0.8], [0, 1, 0, 1])
    >>> th.tolist(), p_miss.tolist(), p_fa.tolist()
    ([0.1, 0.4, 0.8], [0.0, 0.5, 1.0], [0.5, 0.0, 0.0])
    """
    thresholds, n_tar_le, n_non_gt, n_tar, n_non = _counts(
        *_scores_labels(scores, labels)
    )
    return thresholds, n_tar_le / n_tar, n_non_gt / n_non


def _counts(scores, labels):
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    tar = labels[order]
    ends = np.append(np.flatnonzero(s[1:] != s[:-1]), len(s) - 1)
    n_tar = int(tar.sum())
    n_non = len(s) - n_tar
    n_tar_le = np.cumsum(tar, dtype=np.int64)[ends]
    n_non_le = ends + 1 - n_tar_le
    return s[ends], n_tar_le, n_non - n_non_le, n_tar, n_non


def compute_eer(scores, labels):
    """Equal error rate and its threshold, in O(N log N).

    The operating points are those of ``speechbrain.utils.metric_stats.EER``:
    accept when score > threshold, for each distinct score as threshold, and
    ``EER = (P_fa + P_miss) / 2`` at the point where ``|P_fa - P_miss|`` is
    smallest, so the value equals SpeechBrain's (which is O(N^2)). When two
    points are equally far from equality (possible when there are as many
    targets as non-targets, and then they give different EERs), the choice
    follows SpeechBrain's float32 arithmetic, which is what it returns; the
    threshold may then be the midpoint between two distinct scores, as there.

    Arguments
    ---------
    scores : array-like
        One score per trial.
    labels : array-like
        bool or 0/1, 1 = target trial.

    Returns
    -------
    eer : float
        Equal error rate as a fraction (multiply by 100 for %).
    threshold : float
        Accept trials with score strictly above it.

    Example
    -------
    >>> compute_eer([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0])
    (0.0, 0.3)
    >>> eer, th = compute_eer([0.9, 0.2, 0.3, 0.1, 0.0], [1, 1, 0, 0, 0])
    >>> round(eer, 4), th
    (0.4167, 0.2)
    """
    thresholds, n_tar_le, n_non_gt, n_tar, n_non = _counts(
        *_scores_labels(scores, labels)
    )
    # Rates as SpeechBrain computes them (float32), their exact float64 gap,
    # and the float32 gap it compares against the best gap so far.
    far = n_non_gt.astype(np.float32) / np.float32(n_non)
    frr = n_tar_le.astype(np.float32) / np.float32(n_tar)
    gap64 = np.abs(far.astype(np.float64) - frr.astype(np.float64))
    gap32 = np.abs(far - frr).astype(np.float64)
    # Only points within float32 noise of the smallest gap can be chosen;
    # replay SpeechBrain's sequential "strictly smaller" scan over them, each
    # distinct score followed by the midpoint to the next (same rates).
    near = np.flatnonzero(gap64 <= gap64.min() * (1 + 1e-6))
    best, best_mid = int(near[0]), False
    last = len(thresholds) - 1
    for j in near:
        for mid in (False, True):
            if mid and j == last:
                break
            if (j, mid) != (near[0], False) and gap32[j] < gap64[best]:
                best, best_mid = int(j), mid
    eer = (float(far[best]) + float(frr[best])) / 2
    th = thresholds[best]
    if best_mid:
        th = (th + thresholds[best + 1]) / 2
    return float(eer), float(th)


def compute_min_dcf(scores, labels, p_target=0.01, c_miss=1.0, c_fa=1.0):
    """Normalised minimum detection cost, in O(N log N).

    ``C_det = c_miss * P_miss * p_target + c_fa * P_fa * (1 - p_target)``,
    minimised over the thresholds of :func:`det_curve` (those SpeechBrain's
    ``minDCF`` uses) plus "accept every trial", and divided by
    ``min(c_miss * p_target, c_fa * (1 - p_target))`` (the cost of the better
    trivial system), so that 1.0 means no better than always rejecting or always
    accepting. SpeechBrain's ``minDCF`` returns the unnormalised value.

    Arguments
    ---------
    scores : array-like
        One score per trial.
    labels : array-like
        bool or 0/1, 1 = target trial.
    p_target : float
        Prior of a target trial.
    c_miss, c_fa : float
        Costs of a miss and of a false alarm.

    Returns
    -------
    min_dcf : float
        Normalised minimum DCF.
    threshold : float
        Accept trials with score strictly above it (``-inf``: accept all).

    Example
    -------
    >>> compute_min_dcf([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0])
    (0.0, 0.3)
    """
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    thresholds, n_tar_le, n_non_gt, n_tar, n_non = _counts(
        *_scores_labels(scores, labels)
    )
    c_det = c_miss * p_target * (n_tar_le / n_tar) + c_fa * (1 - p_target) * (
        n_non_gt / n_non
    )
    # Pick among near-equal minima as SpeechBrain's float32 arithmetic does
    # (first minimum of the float32 cost); the value itself is taken in float64.
    p_miss32 = n_tar_le.astype(np.float32) / np.float32(n_tar)
    p_fa32 = n_non_gt.astype(np.float32) / np.float32(n_non)
    c32 = np.float32(c_miss) * p_miss32 * np.float32(p_target) + np.float32(
        c_fa
    ) * p_fa32 * np.float32(1 - p_target)
    j = int(np.argmin(c32))
    best, threshold = float(c_det[j]), float(thresholds[j])
    accept_all = c_fa * (1 - p_target)
    if accept_all < best:
        best, threshold = accept_all, float("-inf")
    return best / min(c_miss * p_target, c_fa * (1 - p_target)), threshold


def metrics_table(scores, labels, conditions=None, p_target=0.01, c_miss=1.0, c_fa=1.0):
    """EER and minDCF for all trials and per condition value (e.g. CN-Celeb genre).

    Arguments
    ---------
    scores : array-like
        One score per trial.
    labels : array-like
        bool or 0/1, 1 = target trial.
    conditions : Mapping[str, array-like], optional
        Condition name to one label per trial (e.g. ``{"genre": genres}``).
    p_target, c_miss, c_fa : float
        minDCF parameters (see :func:`compute_min_dcf`).

    Returns
    -------
    pandas.DataFrame
        Columns ``condition, value, n_trials, n_target, EER, minDCF``; the first
        row is ``("all", "all", ...)``. EER is a fraction (x100 for %). Subsets
        without target or without non-target trials get NaN metrics.

    Example
    -------
    >>> df = metrics_table([0.9, 0.8, 0.3, 0.1, 0.7, 0.2], [1, 1, 0, 0, 0, 1],
    ...                    {"genre": ["a", "a", "a", "a", "b", "b"]})
    >>> df[["condition", "value", "n_trials", "n_target", "EER"]]
      condition value  n_trials  n_target  EER
    0       all   all         6         3  0.333333
    1     genre     a         4         2  0.000000
    2     genre     b         2         1  1.000000
    """
    scores, labels = _scores_labels(scores, labels)
    n = len(scores)

    def row(name, value, mask):
        s = scores if mask is None else scores[mask]
        lab = labels if mask is None else labels[mask]
        n_t = int(lab.sum())
        if 0 < n_t < len(lab):
            eer = compute_eer(s, lab)[0]
            dcf = compute_min_dcf(s, lab, p_target, c_miss, c_fa)[0]
        else:
            eer = dcf = float("nan")
        return {
            "condition": name,
            "value": value,
            "n_trials": len(lab),
            "n_target": n_t,
            "EER": eer,
            "minDCF": dcf,
        }

    rows = [row("all", "all", None)]
    for name, values in (conditions or {}).items():
        values = np.asarray(values, dtype=object).reshape(-1)
        if len(values) != n:
            raise ValueError(
                f"condition {name!r} has {len(values)} labels for {n} trials"
            )
        codes, uniques = pd.factorize(values, sort=True)
        for k, value in enumerate(uniques):
            rows.append(row(str(name), value, codes == k))
    return pd.DataFrame(
        rows, columns=["condition", "value", "n_trials", "n_target", "EER", "minDCF"]
    )


def write_scores(path, enrol_ids, test_ids, scores, labels=None, precision=6):
    """Writes one line ``enrol test score [label]`` per trial.

    Arguments
    ---------
    path : str or path
        Output file (parent folders are created).
    enrol_ids, test_ids : sequence of str
        One enrol id and one test id per trial.
    scores : array-like
        One score per trial.
    labels : array-like, optional
        bool or 0/1 labels, written as ``1``/``0`` after the score.
    precision : int
        Digits after the decimal point.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "scores.txt")
    >>> write_scores(path, ["e1", "e1"], ["t1", "t2"], [0.5, -0.25], [1, 0])
    >>> print(open(path).read(), end="")
    e1 t1 0.500000 1
    e1 t2 -0.250000 0
    """
    _check_trials(enrol_ids, test_ids)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(enrol_ids):
        raise ValueError(f"{len(scores)} scores for {len(enrol_ids)} trials")
    fmt = f"{{}} {{}} {{:.{precision}f}}"
    folder = os.path.dirname(os.fspath(path))
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        if labels is None:
            f.writelines(
                fmt.format(e, t, s) + "\n"
                for e, t, s in zip(enrol_ids, test_ids, scores.tolist())
            )
        else:
            labels = np.asarray(labels).reshape(-1).astype(int)
            if len(labels) != len(scores):
                raise ValueError(f"{len(labels)} labels for {len(scores)} trials")
            f.writelines(
                fmt.format(e, t, s) + f" {lab}\n"
                for e, t, s, lab in zip(
                    enrol_ids, test_ids, scores.tolist(), labels.tolist()
                )
            )


# ------------------------------------------------------------------------ plots
def _figure():
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            "plotting needs matplotlib: pip install sb-angcl[plot] (or pip install matplotlib)"
        ) from err
    return Figure


def _probit(p):
    return torch.special.ndtri(torch.as_tensor(np.asarray(p, dtype=np.float64))).numpy()


def plot_det(scores, labels, path, p_target=0.01, c_miss=1.0, c_fa=1.0, title=None):
    """Draws a DET curve (miss vs false-alarm rate, probit axes) into a PNG.

    The EER point and the minDCF operating point are marked.

    Arguments
    ---------
    scores : array-like
        One score per trial.
    labels : array-like
        bool or 0/1, 1 = target trial.
    path : str or path
        Output image (parent folders are created).
    p_target, c_miss, c_fa : float
        minDCF parameters for the marked point.
    title : str, optional
        Figure title.

    Example
    -------
    >>> import tempfile
    >>> rng = np.random.default_rng(0)
    >>> s = np.concatenate([rng.normal(1, 1, 200), rng.normal(-1, 1, 800)])
    >>> path = os.path.join(tempfile.mkdtemp(), "det.png")
    >>> plot_det(s, np.arange(1000) < 200, path)
    >>> os.path.getsize(path) > 0
    True
    """
    Figure = _figure()
    thresholds, p_miss, p_fa = det_curve(scores, labels)
    p_miss = np.concatenate([[0.0], p_miss])
    p_fa = np.concatenate([[1.0], p_fa])
    eer, _ = compute_eer(scores, labels)
    dcf, dcf_th = compute_min_dcf(scores, labels, p_target, c_miss, c_fa)
    j = 0 if np.isinf(dcf_th) else int(np.searchsorted(thresholds, dcf_th)) + 1

    positive = np.concatenate([p_miss[p_miss > 0], p_fa[p_fa > 0]])
    lo = float(np.clip(positive.min() / 2 if positive.size else 1e-3, 1e-5, 1e-2))
    hi = 0.6
    x, y = (
        _probit(np.clip(p_fa, lo / 2, 1 - lo / 2)),
        _probit(np.clip(p_miss, lo / 2, 1 - lo / 2)),
    )
    # Thin the curve to one point per cell of a fine grid (millions of
    # thresholds would otherwise make a huge, slow figure).
    if len(x) > 4000:
        grid = 2000
        span = _probit([lo / 2, 1 - lo / 2])
        cx = np.floor((x - span[0]) / (span[1] - span[0]) * grid).astype(np.int64)
        cy = np.floor((y - span[0]) / (span[1] - span[0]) * grid).astype(np.int64)
        _, keep = np.unique(cx * (grid + 1) + cy, return_index=True)
        keep = np.union1d(np.sort(keep), [0, len(x) - 1])
        x, y = x[keep], y[keep]

    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(x, y, lw=1.5, label="DET")
    pe = _probit(np.clip(eer, lo / 2, 1 - lo / 2))
    ax.plot([pe], [pe], "o", label=f"EER {100 * eer:.2f}%")
    ax.plot(
        _probit(np.clip(p_fa[j], lo / 2, 1 - lo / 2)),
        _probit(np.clip(p_miss[j], lo / 2, 1 - lo / 2)),
        "s",
        label=f"minDCF {dcf:.3f} (p={p_target:g})",
    )
    ticks = np.array(
        [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6]
    )
    ticks = ticks[(ticks >= lo) & (ticks <= hi)]
    labels_txt = [f"{100 * t:g}" for t in ticks]
    for set_ticks, set_labels, set_lim in (
        (ax.set_xticks, ax.set_xticklabels, ax.set_xlim),
        (ax.set_yticks, ax.set_yticklabels, ax.set_ylim),
    ):
        set_ticks(_probit(ticks))
        set_labels(labels_txt)
        set_lim(*_probit([lo, hi]))
    ax.set_xlabel("False alarm rate (%)")
    ax.set_ylabel("Miss rate (%)")
    ax.grid(True, alpha=0.4)
    ax.legend(loc="upper right", fontsize=8)
    if title:
        ax.set_title(title)
    _save(fig, path)


def plot_score_histogram(scores, labels, path, bins=100, title=None):
    """Draws target and non-target score densities into a PNG, with the EER threshold.

    Arguments
    ---------
    scores : array-like
        One score per trial.
    labels : array-like
        bool or 0/1, 1 = target trial.
    path : str or path
        Output image (parent folders are created).
    bins : int
        Number of histogram bins (shared by both classes).
    title : str, optional
        Figure title.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "hist.png")
    >>> plot_score_histogram([0.9, 0.7, 0.2, 0.1], [1, 1, 0, 0], path)
    >>> os.path.getsize(path) > 0
    True
    """
    Figure = _figure()
    s, lab = _scores_labels(scores, labels)
    eer, th = compute_eer(s, lab)
    edges = np.histogram_bin_edges(s, bins=bins)
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(
        s[~lab],
        bins=edges,
        density=True,
        alpha=0.5,
        label=f"non-target ({(~lab).sum()})",
    )
    ax.hist(s[lab], bins=edges, density=True, alpha=0.5, label=f"target ({lab.sum()})")
    ax.axvline(th, color="k", ls="--", lw=1, label=f"EER threshold ({100 * eer:.2f}%)")
    ax.set_xlabel("score")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    _save(fig, path)


def _save(fig, path):
    folder = os.path.dirname(os.fspath(path))
    if folder:
        os.makedirs(folder, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    logger.info("wrote %s", path)

"""Embedding and scoring whole trial lists: embeddings, cosine, AS-norm, score files.

Vectorised over the trial list, so that CN-Celeb1's 3.5 million trials are
scored with AS-norm in seconds: :func:`embed_manifest`, :class:`EmbeddingTable`,
:func:`speaker_cohort`, :func:`score_trials`, :func:`write_scores`.

Authors
 * sb-angcl contributors 2025
"""

import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import speechbrain as sb
import torch
from tqdm import tqdm

from sb_angcl.data.dataio import load_manifest, make_eval_pipeline

logger = logging.getLogger(__name__)

#: Default bound on the number of float32 values in one temporary block (64 MiB).
DEFAULT_CHUNK_SIZE = 2**24

# Use the dense (matrix-product) path when the unique enrol x unique test matrix
# has at most this many entries per trial: a BLAS product costs far less per
# entry than gathering two vectors per trial.
_DENSE_RATIO = 16


@torch.no_grad()
def embed_manifest(csv_path, modules, device="cpu", batch_size=16, sample_rate=16000,
                   max_seconds=None, data_root=None, desc=None, limit_ids=None):
    """The :class:`EmbeddingTable` of a manifest's rows (``ID,duration,wav,start,stop``).

    ``modules``: ``compute_features``, ``mean_var_norm``, ``embedding_model``;
    utterances are batched by duration, cropped to their centre beyond
    ``max_seconds``; ``limit_ids``: only these IDs; ``desc``: progress label.
    """
    data = load_manifest(csv_path, data_root)
    key_test = {}
    if limit_ids is not None:
        key_test = {"id": lambda x: x in limit_ids}
    data = data.filtered_sorted(sort_key="duration", key_test=key_test)
    sb.dataio.dataset.add_dynamic_item([data], make_eval_pipeline(sample_rate, max_seconds))
    sb.dataio.dataset.set_output_keys([data], ["id", "sig"])
    loader = sb.dataio.dataloader.make_dataloader(data, batch_size=batch_size)
    ids, vectors = [], []
    for name in ("compute_features", "mean_var_norm", "embedding_model"):
        modules[name].eval()
    for batch in tqdm(loader, desc=desc or f"Embedding {os.path.basename(csv_path)}"):
        batch = batch.to(device)
        wavs, lens = batch.sig
        feats = modules["compute_features"](wavs)
        feats = modules["mean_var_norm"](feats, lens)
        emb = modules["embedding_model"](feats, lens)
        vectors.append(emb.reshape(emb.shape[0], -1).float().cpu().numpy())
        ids.extend(batch.id)
    if not ids:
        raise ValueError(f"{csv_path} has no rows to embed")
    return EmbeddingTable(ids, np.concatenate(vectors))


def embed_listed(found, test, model, opts):
    """Embeddings of utterances (``found``: id to its manifest), reusing those in ``test``."""
    ids, vectors = [], []
    by_manifest = {}
    for utt, csv_path in found.items():
        if utt in test:
            ids.append(utt)
            vectors.append(test[utt])
        else:
            by_manifest.setdefault(csv_path, set()).add(utt)
    for csv_path, utts in by_manifest.items():
        table = embed_manifest(csv_path, model, desc="Embedding listed utterances",
                               limit_ids=utts, **opts)
        ids.extend(table.ids)
        vectors.extend(table.vectors)
    return EmbeddingTable(ids, np.stack(vectors))


def _l2_normalize(x, eps=1e-12):
    """Row-wise L2 normalisation of a float32 numpy array (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32, copy=False)


class EmbeddingTable:
    """Float32 embeddings, one row per unique id (utterance or model).

    ``vectors``: an array or tensor of shape ``(len(ids), dim)``.

    Example
    -------
    >>> table = EmbeddingTable(["a", "b", "c"], [[1, 0], [0, 2], [3, 4]])
    >>> len(table), table.dim, "b" in table, "z" in table
    (3, 2, True, False)
    >>> table.indices(["c", "a", "c"]).tolist()
    [2, 0, 2]
    >>> table["b"].tolist()
    [0.0, 2.0]
    """

    def __init__(self, ids, vectors):
        ids = [str(i) for i in ids]
        if isinstance(vectors, torch.Tensor):
            vectors = vectors.detach().cpu().numpy()
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise ValueError(f"EmbeddingTable needs a 2-D array (n_ids, dim), got shape "
                             f"{vectors.shape}; stack the embeddings first (squeeze any "
                             f"singleton time axis).")
        if len(ids) != vectors.shape[0]:
            raise ValueError(f"EmbeddingTable got {len(ids)} ids but {vectors.shape[0]} "
                             f"vectors; give exactly one id per row.")
        index = pd.Index(ids, dtype=object)
        if not index.is_unique:
            dups = pd.unique(index[index.duplicated()])
            raise ValueError(f"EmbeddingTable ids must be unique; {len(dups)} ids repeat, "
                             f"e.g. {list(dups[:5])}.")
        self.ids = ids
        self.vectors = np.ascontiguousarray(vectors)
        self._row = {i: k for k, i in enumerate(ids)}

    @property
    def dim(self):
        """Embedding dimension."""
        return self.vectors.shape[1]

    def __len__(self):
        return len(self.ids)

    def __contains__(self, item):
        return str(item) in self._row

    def __getitem__(self, item):
        return self.vectors[self.indices([item])[0]]

    def __repr__(self):
        return f"EmbeddingTable({len(self)} ids, dim={self.dim})"

    def indices(self, ids):
        """int64 row indices of ``ids`` (which may repeat); KeyError naming unknown ids."""
        if isinstance(ids, str):
            raise TypeError("indices() takes a sequence of ids, not one str")
        try:
            return np.fromiter(map(self._row.__getitem__, ids), dtype=np.int64, count=len(ids))
        except (KeyError, TypeError):
            pass  # an unknown id, or ids that are not str: the slow path says which
        row = self._row
        idx = np.array([row.get(str(i), -1) for i in ids], dtype=np.int64)
        missing = idx < 0
        if missing.any():
            unknown = pd.unique(np.asarray([str(i) for i in ids], dtype=object)[missing])
            raise KeyError(
                f"{len(unknown)} unknown id(s) (of {len(idx)} looked up) not in "
                f"this EmbeddingTable of {len(self)} ids, e.g. "
                f"{[str(u) for u in unknown[:5]]}. Check that the trial list and "
                f"the embeddings come from the same data set and that ids are "
                f"spelled alike (extension, speaker prefix)."
            )
        return idx

    def average(self, groups, normalize=False):
        """One row per model of ``groups`` (model id to its utterance ids): their mean.

        ``normalize``: L2-normalise each utterance before averaging.

        Example
        -------
        >>> t = EmbeddingTable(["u1", "u2", "u3"], [[2, 0], [0, 2], [4, 4]])
        >>> avg = t.average({"spk1": ["u1", "u2"], "spk2": ["u3"]})
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


def speaker_cohort(table, spk_of_id):
    """The AS-norm cohort: per speaker, the normalised mean of its normalised utterances.

    ``spk_of_id`` is a ``{utt_id: spk}`` mapping (only those utterances are
    used) or a sequence aligned with ``table.ids``; rows follow first appearance.

    Example
    -------
    >>> t = EmbeddingTable(["s1/a", "s1/b", "s2/a"], [[1, 0], [0, 3], [2, 2]])
    >>> c = speaker_cohort(t, ["s1", "s1", "s2"])
    >>> c.ids, c.vectors.astype(float).round(4).tolist()
    (['s1', 's2'], [[0.7071, 0.7071], [0.7071, 0.7071]])
    """
    if isinstance(spk_of_id, Mapping):
        utts = list(spk_of_id.keys())
        spks = [spk_of_id[u] for u in utts]
    else:
        spks = list(spk_of_id)
        utts = table.ids
        if len(spks) != len(table):
            raise ValueError(
                f"speaker list has {len(spks)} entries for a table of {len(table)} ids"
            )
    codes, names = pd.factorize(pd.Series(spks, dtype=object))
    names = [str(n) for n in names]
    groups = {name: [] for name in names}
    for u, c in zip(utts, codes):
        groups[names[c]].append(u)
    means = table.average(groups, normalize=True)
    return EmbeddingTable(means.ids, _l2_normalize(means.vectors))


# ---------------------------------------------------------------------- scoring
def score_trials(
    enrol,
    test,
    enrol_ids,
    test_ids,
    cohort=None,
    top_k=300,
    chunk_size=DEFAULT_CHUNK_SIZE,
    progress=True,
):
    """Cosine score of every trial ``(enrol_ids[i], test_ids[i])``, AS-normalised with a cohort.

    Near-complete enrol x test lists (CN-Celeb) take blocks of the dense score
    matrix, sparse ones (VoxCeleb) row-wise products of gathered pairs. AS-norm:
    ``0.5 * ((s - mu_e) / sd_e + (s - mu_t) / sd_t)`` with the mean and unbiased
    std (as SpeechBrain's s-norm) of each side's ``top_k`` cohort scores.

    Arguments
    ---------
    enrol, test : EmbeddingTable
        Enrolment models and test utterances (may be one table).
    enrol_ids, test_ids : sequence of str
        One enrol id and one test id per trial.
    cohort : EmbeddingTable, optional
        AS-norm cohort (:func:`speaker_cohort`); None: raw cosines.
    top_k : int
        Cohort scores per side (at least 2; clipped to the cohort size).
    chunk_size : int
        Bound on the float32 values in one temporary block.
    progress : bool
        Show progress bars on long loops.

    Returns
    -------
    numpy.ndarray
        float64 scores (computed in float32).

    Example
    -------
    >>> t = EmbeddingTable(["a", "b", "c"], [[1, 0], [0, 1], [1, 1]])
    >>> score_trials(t, t, ["a", "a", "c"], ["b", "c", "c"]).round(4).tolist()
    [0.0, 0.7071, 1.0]
    """
    _check_trials(enrol_ids, test_ids)
    if cohort is not None:
        top_k = _check_cohort(cohort, top_k)
    ei, ti = enrol.indices(enrol_ids), test.indices(test_ids)
    E = torch.from_numpy(_l2_normalize(enrol.vectors))
    T = E if test is enrol else torch.from_numpy(_l2_normalize(test.vectors))
    scores = _cosine(E, T, ei, ti, chunk_size, "auto", progress)
    if cohort is None:
        return scores
    C = torch.from_numpy(_l2_normalize(cohort.vectors))
    ue, e_pos = _used_rows(ei, E.shape[0])
    ut, t_pos = _used_rows(ti, T.shape[0])
    mu_e, sd_e = _top_k_stats(E[ue], C, top_k, chunk_size, progress)
    mu_t, sd_t = _top_k_stats(T[ut], C, top_k, chunk_size, progress)
    tiny = np.finfo(np.float64).tiny
    sd_e, sd_t = np.maximum(sd_e, tiny), np.maximum(sd_t, tiny)
    out = (scores - mu_e[e_pos]) / sd_e[e_pos]
    out += (scores - mu_t[t_pos]) / sd_t[t_pos]
    out *= 0.5
    return out


def _check_trials(enrol_ids, test_ids):
    if isinstance(enrol_ids, str) or isinstance(test_ids, str):
        raise TypeError("enrol_ids and test_ids are sequences of ids (one per trial)")
    if len(enrol_ids) != len(test_ids):
        raise ValueError(f"trial list is ragged: {len(enrol_ids)} enrol ids but "
                         f"{len(test_ids)} test ids")


def _check_cohort(cohort, top_k):
    """Validated AS-norm ``top_k`` (clipped to the cohort size)."""
    if not isinstance(cohort, EmbeddingTable):
        raise TypeError("cohort must be an EmbeddingTable (see speaker_cohort())")
    if len(cohort) < 2:
        raise ValueError(f"AS-norm needs a cohort of at least 2 vectors, got {len(cohort)}; "
                         f"raise cohort_size in the YAML or set score_norm: null")
    if int(top_k) < 2:
        raise ValueError(f"top_k must be >= 2 (a std needs two scores), got {top_k}")
    if top_k > len(cohort):
        logger.warning("AS-norm top_k=%d exceeds the cohort size %d; using the whole cohort",
                       top_k, len(cohort))
    return min(int(top_k), len(cohort))


def _used_rows(idx, n_rows):
    """Sorted unique values of ``idx`` and each entry's position among them (O(n))."""
    used = np.zeros(n_rows, dtype=bool)
    used[idx] = True
    uniq = np.flatnonzero(used)
    remap = np.cumsum(used) - 1
    return uniq, remap[idx]


def _bar(iterable, desc, progress):
    return tqdm(iterable, desc=desc, leave=False, disable=not progress or len(iterable) < 4)


def _cosine(E, T, ei, ti, chunk_size, method="auto", progress=True):
    """Row-wise products ``E[ei] . T[ti]`` (float32 torch in, float64 numpy out).

    ``method``: ``"dense"`` (blocks of the score matrix), ``"gather"`` or ``"auto"``.
    """
    n = len(ei)
    out = np.empty(n, dtype=np.float64)
    if n == 0:
        return out
    ue, e_pos = _used_rows(ei, E.shape[0])
    ut, t_pos = _used_rows(ti, T.shape[0])
    if method == "auto":
        method = "dense" if len(ue) * len(ut) <= _DENSE_RATIO * n else "gather"
    if method == "dense":
        Eu, Tu_t = E[ue], T[ut].T.contiguous()
        rows = max(1, chunk_size // max(1, len(ut)))
        if rows >= len(ue):  # the whole matrix fits in one block
            out[:] = (Eu @ Tu_t).numpy()[e_pos, t_pos]
            return out
        # Group trials by enrol row so each block of rows is one slice.
        order = np.argsort(e_pos, kind="stable")
        e_sorted = e_pos[order]
        starts = np.arange(0, len(ue), rows)
        bounds = np.searchsorted(e_sorted, np.append(starts, len(ue)))
        for b, r0 in enumerate(_bar(starts, "cosine", progress)):
            lo, hi = bounds[b], bounds[b + 1]
            if lo == hi:
                continue
            S = (Eu[r0 : r0 + rows] @ Tu_t).numpy()
            sel = order[lo:hi]
            out[sel] = S[e_sorted[lo:hi] - r0, t_pos[sel]]
        return out
    if method != "gather":
        raise ValueError(f"method must be 'auto', 'dense' or 'gather', got {method!r}")
    pairs = max(1, chunk_size // (2 * E.shape[1]))
    ei_t, ti_t = torch.from_numpy(ei), torch.from_numpy(ti)
    for s in _bar(range(0, n, pairs), "cosine", progress):
        a = E.index_select(0, ei_t[s : s + pairs])
        b = T.index_select(0, ti_t[s : s + pairs])
        out[s : s + pairs] = (a * b).sum(dim=1).numpy()
    return out


def _top_k_stats(X, C, top_k, chunk_size, progress=True):
    """float64 mean and unbiased std of the ``top_k`` highest ``X @ C.T`` per row of ``X``.

    ``ndarray.partition`` in threads (it releases the GIL) selects them at about
    half the cost of ``torch.topk``.
    """
    n, m = X.shape[0], C.shape[0]
    mu = np.empty(n, dtype=np.float64)
    sd = np.empty(n, dtype=np.float64)
    Ct = C.T.contiguous()
    rows = max(1, chunk_size // m)
    kth = m - top_k
    workers = max(1, min(torch.get_num_threads(), os.cpu_count() or 1))
    pool = ThreadPoolExecutor(workers) if workers > 1 and n > 256 else None

    def select(block):
        block.partition(kth, axis=1)

    try:
        for s in _bar(range(0, n, rows), "AS-norm cohort", progress):
            S = (X[s : s + rows] @ Ct).numpy()
            if pool is None:
                select(S)
            else:
                list(pool.map(select, np.array_split(S, workers)))
            top = S[:, kth:].astype(np.float64)
            mu[s : s + rows] = top.mean(axis=1)
            sd[s : s + rows] = top.std(axis=1, ddof=1)
    finally:
        if pool is not None:
            pool.shutdown()
    return mu, sd


def write_scores(path, enrol_ids, test_ids, scores, labels=None, precision=6):
    """Writes one line ``enrol test score [label]`` per trial (parent folders are created)."""
    _check_trials(enrol_ids, test_ids)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(enrol_ids):
        raise ValueError(f"{len(scores)} scores for {len(enrol_ids)} trials")
    tails = [""] * len(scores)
    if labels is not None:
        labels = np.asarray(labels).reshape(-1).astype(int)
        if len(labels) != len(scores):
            raise ValueError(f"{len(labels)} labels for {len(scores)} trials")
        tails = [f" {lab}" for lab in labels.tolist()]
    folder = os.path.dirname(os.fspath(path))
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(
            f"{e} {t} {s:.{precision}f}{tail}\n"
            for e, t, s, tail in zip(enrol_ids, test_ids, scores.tolist(), tails)
        )


# ------------------------------------------------------------------ durations
def _manifest_seconds(csv_path, hparams):
    """Seconds of audio the embedding of each row sees (``duration`` capped at ``eval_max_seconds``)."""
    table = pd.read_csv(csv_path, dtype={"ID": str}, usecols=["ID", "duration"])
    seconds = table["duration"].astype(float)
    if hparams["eval_max_seconds"]:
        seconds = seconds.clip(upper=hparams["eval_max_seconds"])
    return pd.Series(seconds.to_numpy(), index=table["ID"])


def enrolment_seconds(protocol, hparams):
    """Seconds of audio of each enrolment model (``qmf``), a Series by model id.

    ``concat``: the rows of ``enrol.csv``; ``average``: the sum over each
    model's utterances in ``enrol_average.csv``.
    """
    if protocol == "average":
        path = hparams["enrol_average_annotation"]
        seconds = _manifest_seconds(path, hparams)
        models = pd.read_csv(path, dtype=str)["model"].to_numpy()
        return pd.Series(seconds.to_numpy()).groupby(models).sum()
    return _manifest_seconds(hparams["enrol_annotation"], hparams)


def _lookup(series, ids, side):
    idx = series.index.get_indexer(list(ids))
    if (idx < 0).any():
        raise KeyError(f"no duration for {int((idx < 0).sum())} {side} ids, e.g. "
                       f"{list(pd.unique(np.asarray(ids)[idx < 0])[:3])}")
    return series.to_numpy()[idx]

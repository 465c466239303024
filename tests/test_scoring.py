"""Tests for sb_angcl.evaluation.scoring: embedding tables, cosine scoring, AS-norm, score files.

Oracles: brute-force float64 per-trial loops for cosine and AS-norm. The
metrics are tested in test_metrics.py.
"""

import numpy as np
import pytest
import torch

from sb_angcl.evaluation.scoring import (
    EmbeddingTable,
    _cosine,
    _l2_normalize,
    _top_k_stats,
    score_trials,
    speaker_cohort,
    write_scores,
)


def _table(prefix, n, dim, rng):
    return EmbeddingTable([f"{prefix}{i}" for i in range(n)], rng.normal(size=(n, dim)))


# --------------------------------------------------------------------- cosine
def _loop_cosine(enrol, test, enrol_ids, test_ids):
    out = []
    for e, t in zip(enrol_ids, test_ids):
        a = enrol[e].astype(np.float64)
        b = test[t].astype(np.float64)
        out.append(float(a @ b / np.sqrt((a @ a) * (b @ b))))
    return np.array(out)


def _trials(layout, enrol, test, rng):
    if layout == "cross":  # CN-Celeb style: (nearly) every model against every test
        pairs = [(e, t) for e in enrol.ids for t in test.ids][::2]
    else:  # VoxCeleb style
        idx = rng.integers(0, [len(enrol), len(test)], size=(50, 2))
        pairs = [(enrol.ids[i], test.ids[j]) for i, j in idx]
    rng.shuffle(pairs)
    return [p[0] for p in pairs], [p[1] for p in pairs]


@pytest.mark.parametrize("layout", ["cross", "sparse"])
def test_score_trials_cosine_equals_python_loop(layout):
    rng = np.random.default_rng(1)
    enrol, test = _table("e", 12, 16, rng), _table("t", 40, 16, rng)
    e_ids, t_ids = _trials(layout, enrol, test, rng)
    ref = _loop_cosine(enrol, test, e_ids, t_ids)
    # Small chunk_size forces several blocks.
    for chunk in (64, 1 << 20):
        got = score_trials(enrol, test, e_ids, t_ids, chunk_size=chunk)
        assert got.dtype == np.float64 and got.shape == (len(e_ids),)
        np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", ["dense", "gather"])
@pytest.mark.parametrize("layout", ["cross", "sparse"])
def test_both_cosine_paths_on_both_layouts(method, layout):
    # score_trials picks the path from the layout; force each path on each.
    rng = np.random.default_rng(1)
    enrol, test = _table("e", 12, 16, rng), _table("t", 40, 16, rng)
    e_ids, t_ids = _trials(layout, enrol, test, rng)
    E = torch.from_numpy(_l2_normalize(enrol.vectors))
    T = torch.from_numpy(_l2_normalize(test.vectors))
    ref = _loop_cosine(enrol, test, e_ids, t_ids)
    for chunk in (64, 1 << 20):
        got = _cosine(E, T, enrol.indices(e_ids), test.indices(t_ids), chunk, method)
        np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)


def test_cosine_same_table_and_bad_input():
    rng = np.random.default_rng(2)
    t = _table("u", 5, 4, rng)
    got = score_trials(t, t, ["u0", "u3"], ["u0", "u1"])
    assert got[0] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="method"):
        _cosine(torch.eye(2), torch.eye(2), np.array([0]), np.array([1]), 64, "fast")
    with pytest.raises(ValueError, match="ragged"):
        score_trials(t, t, ["u0", "u1"], ["u1"])
    with pytest.raises(TypeError, match="sequences"):
        score_trials(t, t, "u0", "u1")


def test_unknown_id_raises_key_error_naming_it():
    rng = np.random.default_rng(3)
    t = _table("u", 5, 4, rng)
    with pytest.raises(KeyError, match=r"1 unknown id.*ghost_utt"):
        score_trials(t, t, ["u0", "u1", "u2"], ["u1", "ghost_utt", "ghost_utt"])
    with pytest.raises(KeyError, match=r"2 unknown id.*'a'.*'b'"):
        t.indices(["a", "u0", "b", "a"])


# -------------------------------------------------------------------- AS-norm
def _loop_as_norm(scores, enrol, test, enrol_ids, test_ids, cohort, top_k):
    C = cohort.vectors.astype(np.float64)
    C = C / np.linalg.norm(C, axis=1, keepdims=True)

    def stats(v):
        v = v.astype(np.float64)
        v = v / np.linalg.norm(v)
        top = np.sort(C @ v)[::-1][:top_k]
        return top.mean(), top.std(ddof=1)

    out = []
    for s, e, t in zip(scores, enrol_ids, test_ids):
        mu_e, sd_e = stats(enrol[e])
        mu_t, sd_t = stats(test[t])
        out.append(0.5 * ((s - mu_e) / sd_e + (s - mu_t) / sd_t))
    return np.array(out)


@pytest.mark.parametrize("layout", ["cross", "sparse"])
def test_as_norm_equals_per_trial_reference(layout):
    rng = np.random.default_rng(4)
    enrol, test = _table("e", 7, 12, rng), _table("t", 30, 12, rng)
    cohort = _table("c", 50, 12, rng)
    e_ids, t_ids = _trials(layout, enrol, test, rng)
    raw = score_trials(enrol, test, e_ids, t_ids)
    ref = _loop_as_norm(raw, enrol, test, e_ids, t_ids, cohort, 10)
    # Default and tiny chunks (several cohort blocks) agree with the loop.
    for chunk in (100, 1 << 20):
        got = score_trials(enrol, test, e_ids, t_ids, cohort=cohort, top_k=10, chunk_size=chunk)
        np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    # Normalisation changes the scores (the test could fail).
    assert np.abs(got - raw).max() > 0.1


def test_as_norm_cohort_and_top_k_checks(caplog):
    rng = np.random.default_rng(6)
    cohort = _table("c", 5, 4, rng)
    with pytest.raises(ValueError, match="top_k"):
        score_trials(cohort, cohort, ["c0"], ["c1"], cohort=cohort, top_k=1)
    with pytest.raises(ValueError, match="at least 2"):
        score_trials(cohort, cohort, ["c0"], ["c1"], cohort=cohort.average({"a": ["c0"]}))
    with pytest.raises(TypeError, match="EmbeddingTable"):
        score_trials(cohort, cohort, ["c0"], ["c1"], cohort=cohort.vectors)
    with caplog.at_level("WARNING"):
        clipped = score_trials(cohort, cohort, ["c0", "c2"], ["c1", "c3"], cohort=cohort)
    assert "exceeds the cohort size" in caplog.text
    whole = _loop_as_norm(
        score_trials(cohort, cohort, ["c0", "c2"], ["c1", "c3"]),
        cohort, cohort, ["c0", "c2"], ["c1", "c3"], cohort, 5,
    )
    np.testing.assert_allclose(clipped, whole, atol=1e-5, rtol=0)


def test_speaker_cohort():
    rng = np.random.default_rng(7)
    table = _table("u", 9, 6, rng)
    spk = {u: f"s{int(u[1:]) % 3}" for u in table.ids}
    expected = []
    for s in ["s0", "s1", "s2"]:
        rows = np.stack(
            [table[u] / np.linalg.norm(table[u]) for u in table.ids if spk[u] == s]
        )
        m = rows.astype(np.float64).mean(0)
        expected.append(m / np.linalg.norm(m))
    for how in (spk, [spk[u] for u in table.ids]):
        cohort = speaker_cohort(table, how)
        assert cohort.ids == ["s0", "s1", "s2"]
        np.testing.assert_allclose(cohort.vectors, np.stack(expected), atol=1e-6)
    # A mapping may cover only part of the table.
    part = speaker_cohort(table, {"u0": "a", "u1": "a"})
    assert part.ids == ["a"]
    with pytest.raises(ValueError, match="entries"):
        speaker_cohort(table, ["s0", "s1"])


# ------------------------------------------------------------ embedding table
def test_table_construction_checks():
    with pytest.raises(ValueError, match="unique"):
        EmbeddingTable(["a", "b", "a"], np.zeros((3, 2)))
    with pytest.raises(ValueError, match="2 ids but 3 vectors"):
        EmbeddingTable(["a", "b"], np.zeros((3, 2)))
    with pytest.raises(ValueError, match="2-D"):
        EmbeddingTable(["a"], np.zeros(3))
    t = EmbeddingTable(["x", "y"], torch.ones(2, 3, dtype=torch.float64))
    assert t.vectors.dtype == np.float32 and len(t) == 2 and "y" in t and "z" not in t
    with pytest.raises(TypeError, match="not one str"):
        t.indices("x")


def test_table_average():
    rng = np.random.default_rng(9)
    t = _table("u", 6, 4, rng)
    groups = {"m1": ["u0", "u2", "u5"], "m2": ["u1"], "m3": ["u3", "u4"]}
    avg = t.average(groups)
    assert avg.ids == ["m1", "m2", "m3"]
    for m, utts in groups.items():
        np.testing.assert_allclose(avg[m], np.mean([t[u] for u in utts], axis=0), atol=1e-6)
    avg_n = t.average(groups, normalize=True)
    np.testing.assert_allclose(
        avg_n["m3"],
        np.mean([t[u] / np.linalg.norm(t[u]) for u in groups["m3"]], axis=0),
        atol=1e-6,
    )
    with pytest.raises(KeyError, match="nobody"):
        t.average({"m": ["u0", "nobody"]})
    with pytest.raises(ValueError, match="no utterances"):
        t.average({"m": []})


# -------------------------------------------------------------------- files
def test_write_scores(tmp_path):
    path = tmp_path / "out" / "scores.txt"
    write_scores(
        path,
        ["e1", "e2", "e2"],
        ["t1", "t1", "t9"],
        np.array([0.5, -1.25, 0.123456789]),
        [1, 0, True],
    )
    lines = [ln.split() for ln in path.read_text().splitlines()]
    assert lines == [
        ["e1", "t1", "0.500000", "1"],
        ["e2", "t1", "-1.250000", "0"],
        ["e2", "t9", "0.123457", "1"],
    ]
    write_scores(path, ["e1"], ["t1"], [0.25])
    assert path.read_text() == "e1 t1 0.250000\n"
    with pytest.raises(ValueError):
        write_scores(path, ["e1", "e2"], ["t1", "t2"], [0.25])


@pytest.mark.parametrize("threads", [1, 2])
def test_top_k_stats_by_partition_equal_torch_topk(threads):
    """AS-norm's cohort statistics (blocks of rows, in-place partition, threads over
    row slices when torch has several) equal torch.topk's on the same products."""
    rng = np.random.default_rng(5)
    X = torch.from_numpy(_l2_normalize(rng.normal(size=(700, 16)).astype(np.float32)))
    C = torch.from_numpy(_l2_normalize(rng.normal(size=(90, 16)).astype(np.float32)))
    top = torch.topk(X @ C.T, 25, dim=1).values.double()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for chunk in (90 * 300, 1 << 20):  # 300-row blocks (the last one short), one block
            mu, sd = _top_k_stats(X, C, 25, chunk, progress=False)
            np.testing.assert_allclose(mu, top.mean(dim=1).numpy(), rtol=0, atol=1e-12)
            np.testing.assert_allclose(sd, top.std(dim=1).numpy(), rtol=0, atol=1e-12)
    finally:
        torch.set_num_threads(before)

"""Per-condition trial labels of sb_angcl.evaluation.metrics.trial_conditions (same/cross session)."""

import pandas as pd

from sb_angcl.evaluation.metrics import trial_conditions


def test_voxceleb_same_and_cross_video_counts():
    t = pd.DataFrame(
        {
            "enrol": ["a/v1/1.wav", "a/v1/1.wav", "a/v1/1.wav", "b/v2/1.wav", "b/v2/1.wav"],
            "test": ["a/v2/3.wav", "b/v1/1.wav", "a/v1/2.wav", "a/v2/3.wav", "c/v9/1.wav"],
            "label": [1, 0, 1, 0, 0],
            "enrol_language": ["x", "x", "x", "y", "y"],
            "test_language": ["y", "x", "x", "y", "x"],
        }
    )
    c = trial_conditions(t)
    assert c["session"].tolist() == ["cross", "same", "same", "same", "cross"]
    assert c["cross_language"].tolist() == ["cross", "same", "same", "same", "cross"]


def test_cnceleb_same_genre_and_session_columns():
    t = pd.DataFrame(
        {
            "enrol": ["id1-enroll"] * 3,
            "test": ["test/id1-vlog-01-001.wav", "test/id2-drama-01-001.wav", "test/id2-sing-01-002.wav"],
            "label": [1, 0, 0],
            "enrol_genre": ["vlog+sing", "vlog+sing", "vlog+sing"],
            "test_genre": ["vlog", "drama", "sing"],
        }
    )
    assert trial_conditions(t)["session"].tolist() == ["same", "cross", "same"]
    t["enrol_session"] = ["vlog-01", "vlog-01", "vlog-01"]
    t["test_session"] = ["vlog-01", "drama-01", "sing-01"]
    assert trial_conditions(t)["session"].tolist() == ["same", "cross", "cross"]


def test_no_session_evidence_no_condition():
    t = pd.DataFrame({"enrol": ["e1"], "test": ["t1"], "label": [1]})
    assert "session" not in trial_conditions(t)

"""tools/fixed_seed_check.py: what counts as the same output of two runs.

Authors
 * sb-angcl contributors
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import fixed_seed_check  # noqa: E402


def write_run(top, name, epoch_time, scores):
    folder = os.path.join(top, name)
    os.makedirs(os.path.join(folder, "save"))
    with open(os.path.join(folder, "train_log.txt"), "w", encoding="utf-8") as fout:
        fout.write(f"epoch: 1, lr: 0.002 - train loss: 9.1, time_s: {epoch_time}\n")
    with open(os.path.join(folder, "scores.txt"), "w", encoding="utf-8") as fout:
        fout.write(scores)
    with open(os.path.join(folder, "save", "train.csv"), "w", encoding="utf-8") as fout:
        fout.write(f"ID,wav\nu1,{os.path.abspath(top)}/{name}/save/u1.wav\n")


def test_epoch_times_and_output_paths_do_not_count_a_score_does(tmp_path, capsys):
    first, second = str(tmp_path / "a"), str(tmp_path / "b")
    for top, seconds in ((first, 12.5), (second, 40.25)):
        for name in fixed_seed_check.RUNS:
            write_run(top, name, seconds, "u1 u2 0.5\n")
    assert fixed_seed_check.compare(first, second) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"identical {3 * len(fixed_seed_check.RUNS)}, different 0"
    with open(os.path.join(second, "cn", "scores.txt"), "w", encoding="utf-8") as fout:
        fout.write("u1 u2 0.50001\n")
    os.remove(os.path.join(second, "small", "save", "train.csv"))
    assert fixed_seed_check.compare(first, second) == 2
    out = capsys.readouterr().out
    assert "DIFFERS cn/scores.txt" in out and "MISSING small/save/train.csv" in out

"""The model card of an exported folder, after a tiny train + verify on the built-in corpus.

Training writes ``inference/README.md`` with its sections and an empty results
section; each ``verify.py`` run then records its overall EER / minDCF there
(one row per trials / enrolment / scoring). The recorded numbers must equal
those of the run's ``metrics.csv``.
"""

import os
import re

import pandas as pd
import pytest
from test_recipes import ROWS, corpus, run_row  # noqa: F401 (corpus is a fixture)

SECTIONS = ("## Training data and recipe", "## Results", "## How to use", "## Files")


def _results_rows(card):
    block = card.split("<!-- results: filled in by verify.py -->")[1].split("<!-- end")[0]
    lines = [ln for ln in block.splitlines() if ln.startswith("|")]
    if not lines:
        return []
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[2:]]


def test_model_card_written_at_export_and_filled_by_verify(corpus):  # noqa: F811
    rows = dict(ROWS)
    out = "tests/tmp/model_card"
    train = dict(rows["VoxCeleb_row_02"])
    train["test_debug_flags"] += f" --output_folder={out}"
    folder, _ = run_row("model_card_train", train)
    card_path = os.path.join(folder, "inference", "README.md")
    card = open(card_path, encoding="utf-8").read()

    for section in SECTIONS:
        assert section in card, f"{section!r} missing from the card"
    assert "Not evaluated yet" in card and _results_rows(card) == []
    assert "recipes/VoxCeleb/SpeakerRec" in card
    assert re.search(r"python \S*train\.py \S*hparams/train_ecapa_angcl_small\.yaml", card)
    assert "--speakers_per_batch=2" in card
    assert re.search(r"Exported \d{4}-\d\d-\d\d \d\d:\d\d UTC", card)
    n_train = len(pd.read_csv(os.path.join(folder, "save", "train.csv")))
    assert f"{n_train} utterances" in card
    assert "SpeakerRecognition.from_hparams(" in card and "verify_files(" in card
    # The folder as the run saw it (relative), never a machine's absolute path.
    assert f'source="{os.path.join(out, "inference")}"' in card and os.getcwd() not in card
    # Every objective setting of the YAML, the license, the citations, the synthetic warning.
    for key in ("projection_dim", "alpha_min", "alpha_max", "alpha_smoothing",
                "positives_across_sessions", "margin", "temperature", "attention_temperature",
                "balancing", "gradient_normalization", "aam_margin", "aam_scale"):
        assert re.search(rf"^\| {key} \| [^|]+ \|$", card, re.M), f"{key} missing from the card"
    assert "| projection_dim | 96 |" in card and "| alpha_min | 0.3 |" in card
    assert "License: Apache-2.0" in card and "## License and citation" in card
    assert "arXiv:2210.16622" in card and "Li, Zhe and Mak, Man-Wai and Meng" in card
    assert "SpeechBrain" in card and "2106.04624" in card
    assert "trained on the built-in synthetic corpus" in card
    # The YAML used travels with the model, overrides applied.
    used = open(os.path.join(folder, "inference", "train_hyperparams.yaml")).read()
    assert re.search(r"^speakers_per_batch: 2$", used, re.M)

    verify = dict(rows["VoxCeleb_row_03"])  # AS-norm
    verify["test_debug_flags"] = verify["test_debug_flags"].replace(
        "--output_folder=tests/tmp/VoxCeleb_row_02", f"--output_folder={out}"
    )
    run_row("model_card_verify", verify)
    cosine = dict(verify, test_debug_flags=verify["test_debug_flags"].replace(
        "--score_norm=as-norm", "--score_norm=null"))
    run_row("model_card_verify", cosine)  # (replacing a row: record_model_card_results' doctest)
    metrics = pd.read_csv(os.path.join(folder, "metrics.csv")).iloc[0]

    card = open(card_path, encoding="utf-8").read()
    assert "Not evaluated yet" not in card
    results = _results_rows(card)
    assert [(r["enrolment"], r["scoring"]) for r in results] == [
        ("concat", "AS-norm"),
        ("concat", "cosine"),
    ]
    row = results[1]  # the last run wrote metrics.csv
    assert row["trials"] == "meta/veri_test2.txt"
    assert row["trials (targets)"] == f"{metrics['n_trials']} ({metrics['n_target']})"
    assert float(row["EER (%)"]) == pytest.approx(100 * metrics["EER"], abs=0.005)
    assert float(row["minDCF (p=0.01)"]) == pytest.approx(metrics["minDCF"], abs=5e-5)
    assert -1.0 <= float(row["EER threshold"]) <= 1.0  # a cosine
    for section in SECTIONS:  # the rest of the card is untouched
        assert section in card


def test_writing_a_card_leaves_hyperpyyaml_loading_alone(tmp_path):
    # Reading the YAML for the card once registered a catch-all tag constructor
    # on ruamel's SafeConstructor, and later recipe loads read every !ref as None.
    from hyperpyyaml import load_hyperpyyaml

    from sb_angcl.model_card import write_model_card

    yaml_file = tmp_path / "h.yaml"
    yaml_file.write_text("root: /x\nsave: !ref <root>/save\nbalancing: fixed\n")
    write_model_card(str(tmp_path), str(yaml_file), {"root": "/y"}, 3)
    assert "| balancing | fixed |" in (tmp_path / "README.md").read_text()
    with open(yaml_file) as fin:
        assert load_hyperpyyaml(fin)["save"] == "/x/save"


def test_card_of_real_data_has_no_synthetic_warning_and_lists_the_objective(tmp_path):
    from sb_angcl.model_card import SYNTHETIC_MARKER, write_model_card

    data = tmp_path / "VoxCeleb1"
    data.mkdir()
    yaml_file = tmp_path / "h.yaml"
    yaml_file.write_text(f"data_folder: {data}\nbalancing: mgda_ub\nprojection_dim: 0\n"
                         "alpha_min: 0.0\nalpha_smoothing: 0.0\npositives_across_sessions: False\n")
    card = (tmp_path / "out")
    card.mkdir()
    text = open(write_model_card(str(card), str(yaml_file), {}, 5)).read()
    assert "synthetic corpus" not in text
    for row in ("| projection_dim | 0 |", "| alpha_min | 0.0 |", "| alpha_smoothing | 0.0 |",
                "| positives_across_sessions | False |"):
        assert row in text
    (tmp_path / SYNTHETIC_MARKER).write_text("{}")  # the generator's marker beside the layout
    text = open(write_model_card(str(card), str(yaml_file), {}, 5)).read()
    assert "trained on the built-in synthetic corpus" in text

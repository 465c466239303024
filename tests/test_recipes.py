"""Recipe tests: every row of tests/recipes/*.csv, run the upstream SpeechBrain way.

Each row runs ``python <Script_file> <Hparam_file> <test_debug_flags> --debug
--debug_persistently --device=cpu --output_folder=tests/tmp/<Dataset>_row_NN``
(the output folder is left alone when the flags name one, so a verify row can
score the model of the train row before it), and checks ``file_exists=[...]``.
The corpus is the built-in synthetic one, generated once per session in
``tests/tmp/corpus``, in both the VoxCeleb and CN-Celeb layouts.

Then the things the rows alone cannot show: the exported folder reloads
offline through SpeechBrain's ``SpeakerRecognition`` and embeds like the
trained encoder; a pretrained start gives the exported weights at step 0; the
CN-Celeb verification scores every trial of ``trials.lst`` and its per-genre
table sums to the total.
"""

import csv
import os
import re
import shlex
import subprocess
import sys

import pandas as pd
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TMP = os.path.join(ROOT, "tests", "tmp")
CORPUS = os.path.join(TMP, "corpus")


def recipe_rows():
    """(row id, row dict) for every row of tests/recipes/*.csv, in file order."""
    rows = []
    folder = os.path.join(ROOT, "tests", "recipes")
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".csv"):
            continue
        with open(os.path.join(folder, name), newline="", encoding="utf-8") as fin:
            for i, row in enumerate(csv.DictReader(fin)):
                rows.append((f"{name[:-4]}_row_{i + 2:02d}", row))
    return rows


@pytest.fixture(scope="session")
def corpus():
    """The built-in corpus in both layouts (generated once, reused)."""
    from synthetic_corpus import generate_corpus

    marker = os.path.join(CORPUS, "synthetic_corpus.json")
    if not os.path.isfile(marker):
        generate_corpus(
            CORPUS, layout="both", num_speakers=10, num_utterances=6, num_sessions=2,
            num_languages=2, seed=3, overwrite=True, progress=False,
        )
    return CORPUS


def run_row(row_id, row):
    """Run one recipe row; return its output folder."""
    flags = shlex.split(row["test_debug_flags"])
    out = next((f.split("=", 1)[1] for f in flags if f.startswith("--output_folder=")), None)
    if out is None:
        out = os.path.join("tests", "tmp", row_id)
        flags.append(f"--output_folder={out}")
    script = os.path.join(ROOT, row["Script_file"])
    cmd = [sys.executable, script, os.path.join(ROOT, row["Hparam_file"]), *flags,
           "--debug", "--debug_persistently", "--device=cpu"]
    # One thread: the models are tiny, and a busy machine makes several
    # threads per process far slower than one.
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.path.dirname(script) + os.pathsep + ROOT)
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, (
        f"{row_id} failed: {' '.join(cmd)}\n--- stdout ---\n{proc.stdout[-3000:]}"
        f"\n--- stderr ---\n{proc.stderr[-5000:]}"
    )
    return os.path.join(ROOT, out), proc


def check_files(folder, checks):
    """``file_exists=[a,b]`` from upstream's test_debug_checks."""
    match = re.search(r"file_exists=\[(.*?)\]", checks)
    names = [n.strip() for n in match.group(1).split(",")] if match else []
    missing = [n for n in names if not os.path.exists(os.path.join(folder, n))]
    assert not missing, f"missing in {folder}: {missing}"


ROWS = recipe_rows()


def test_recipe_csvs_are_complete():
    """Every hparams file of every recipe has a row; every named file exists."""
    listed = {row["Hparam_file"] for _, row in ROWS}
    for recipe in ("recipes/VoxCeleb/SpeakerRec", "recipes/CNCeleb/SpeakerRec"):
        folder = os.path.join(ROOT, recipe, "hparams")
        for name in os.listdir(folder):
            assert f"{recipe}/hparams/{name}" in listed, f"{recipe}/hparams/{name} has no test row"
    for row_id, row in ROWS:
        for key in ("Script_file", "Hparam_file", "Data_prep_file", "Readme_file"):
            assert os.path.isfile(os.path.join(ROOT, row[key])), f"{row_id}: {row[key]} missing"


@pytest.mark.parametrize("row_id,row", ROWS, ids=[r[0] for r in ROWS])
def test_recipe_row(corpus, row_id, row):
    """Each row trains (or verifies) for a couple of batches and writes its files."""
    folder, proc = run_row(row_id, row)
    check_files(folder, row["test_debug_checks"])
    if row["Script_file"].endswith("verify.py"):
        assert re.search(r"EER \d+\.\d+%", proc.stdout), proc.stdout[-2000:]


def _trained_row(dataset):
    return os.path.join(TMP, f"{dataset}_row_02")


def test_export_reloads_offline_with_same_embedding(corpus):
    """The exported folder loads through SpeakerRecognition offline and embeds
    exactly like the trained encoder, and verify_files works."""
    from speechbrain.inference.speaker import SpeakerRecognition
    from speechbrain.utils.fetching import FetchConfig

    from sb_angcl.data.dataio import load_segment

    folder = _trained_row("VoxCeleb")
    if not os.path.isdir(os.path.join(folder, "inference")):
        run_row("VoxCeleb_row_02", dict(ROWS)["VoxCeleb_row_02"])
    model = SpeakerRecognition.from_hparams(
        source=os.path.join(folder, "inference"),
        savedir=os.path.join(TMP, "pretrained_export"),
        fetch_config=FetchConfig(allow_network=False),
    )
    test = pd.read_csv(os.path.join(folder, "save", "test.csv"))
    wavs = [test["wav"][0], test["wav"][1]]
    signal = load_segment(wavs[0]).unsqueeze(0)
    exported = model.encode_batch(signal).squeeze()

    # The trained encoder from the recipe's best checkpoint.
    sys.path.insert(0, ROOT)
    from sb_angcl.hyperparams import load_trained_hparams

    overrides = {"data_folder": os.path.join(CORPUS, "VoxCeleb1"), "output_folder": folder,
                 "speakers_per_batch": 2, "utterances_per_speaker": 2, "sentence_len": 1.0}
    hparams = load_trained_hparams(
        os.path.join(ROOT, "recipes/VoxCeleb/SpeakerRec/hparams/train_ecapa_angcl_small.yaml"),
        overrides,
    )
    assert hparams["checkpointer"].recover_if_possible(min_key="ErrorRate") is not None
    for name in ("compute_features", "mean_var_norm", "embedding_model"):
        hparams[name].eval()
    with torch.no_grad():
        lens = torch.ones(1)
        feats = hparams["mean_var_norm"](hparams["compute_features"](signal), lens)
        trained = hparams["embedding_model"](feats, lens).squeeze()
    torch.testing.assert_close(exported, trained, rtol=1e-5, atol=1e-5)
    score, decision = model.verify_files(wavs[0], wavs[1])
    assert -1.0 <= float(score) <= 1.0 and decision.dtype == torch.bool


def test_pretrained_start_gives_exported_weights(corpus):
    """--pretrained_model=<export folder> initialises the encoder with exactly those weights."""
    source = os.path.join(_trained_row("VoxCeleb"), "inference")
    if not os.path.isdir(source):
        run_row("VoxCeleb_row_02", dict(ROWS)["VoxCeleb_row_02"])
    row = dict(dict(ROWS)["VoxCeleb_row_02"])
    # Zero epochs: nothing is trained, so the export shows the weights at step 0.
    row["test_debug_flags"] += f" --pretrained_model={source} --number_of_epochs=0"
    folder, proc = run_row("VoxCeleb_pretrained", row)
    assert "Initialised ['embedding_model']" in proc.stdout + proc.stderr
    start = torch.load(os.path.join(folder, "inference", "embedding_model.ckpt"))
    exported = torch.load(os.path.join(source, "embedding_model.ckpt"))
    assert start.keys() == exported.keys()
    for key in exported:
        torch.testing.assert_close(start[key], exported[key], rtol=0, atol=0)


def test_cnceleb_verify_counts(corpus):
    """All trials of trials.lst are scored; the per-genre table sums to the total."""
    folder = _trained_row("CNCeleb")
    rows = dict(ROWS)
    if not os.path.isfile(os.path.join(folder, "metrics_average.csv")):
        run_row("CNCeleb_row_02", rows["CNCeleb_row_02"])
        run_row("CNCeleb_row_03", rows["CNCeleb_row_03"])
    with open(os.path.join(CORPUS, "CN-Celeb_flac", "eval", "lists", "trials.lst")) as fin:
        n_trials = sum(1 for line in fin if line.strip())
    for suffix in ("", "_average"):
        with open(os.path.join(folder, f"scores{suffix}.txt")) as fin:
            assert sum(1 for line in fin if line.strip()) == n_trials
        table = pd.read_csv(os.path.join(folder, f"metrics{suffix}.csv"))
        overall = table[table["condition"] == "all"].iloc[0]
        assert overall["n_trials"] == n_trials
        for condition in ("test_genre", "enrol_genre", "genre_pair"):
            part = table[table["condition"] == condition]
            assert len(part) > 0, f"no {condition} rows"
            assert part["n_trials"].sum() == n_trials
            assert part["n_target"].sum() == overall["n_target"]


def test_scoring_settings_live_in_the_verification_yaml(tmp_path):
    """Each recipe's hparams/verification.yaml holds the scoring and calibration settings
    (loaded with the two folders alone); no training YAML carries them."""
    from hyperpyyaml import load_hyperpyyaml

    scoring = ("score_norm", "cohort_size", "top_k", "calibration", "calibration_trials",
               "calibration_prior", "calibration_folds", "calibration_max_trials", "scores_file",
               "trials_annotation", "enrol_annotation", "test_annotation", "eval_max_seconds",
               "enrol_protocol", "model_folder")
    for recipe in ("recipes/VoxCeleb/SpeakerRec", "recipes/CNCeleb/SpeakerRec"):
        folder = os.path.join(ROOT, recipe, "hparams")
        with open(os.path.join(folder, "verification.yaml"), encoding="utf-8") as fin:
            hparams = load_hyperpyyaml(fin, {"data_folder": str(tmp_path),
                                             "output_folder": str(tmp_path / "run")})
        assert set(scoring) <= set(hparams), recipe
        assert hparams["model_folder"] == str(tmp_path / "run" / "inference")
        for name in os.listdir(folder):
            if name == "verification.yaml":
                continue
            with open(os.path.join(folder, name), encoding="utf-8") as fin:
                keys = set(re.findall(r"^(\w+):", fin.read(), re.M))
            assert not keys & set(scoring), f"{recipe}/hparams/{name}: {sorted(keys & set(scoring))}"

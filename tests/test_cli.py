"""The ``sb-angcl`` command on a model trained here, the way a user would get one.

A folder of speakers is prepared with ``sb-angcl prepare folder``, the VoxCeleb
recipe trains on it in two steps (``train.py ... --skip_prep=True
--output_folder=<the prepare's parent>``, a few batches with ``--debug``),
scores the drawn trial list and records a calibration in the exported
folder. Then ``verify`` / ``score`` / ``embed`` are checked against
SpeechBrain's ``SpeakerRecognition`` loading the same folder, and the errors
for a missing file, an unreadable one and a trial naming an unknown file.
"""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from test_own_data import speaker_tree

from sb_angcl.cli import calibrated_llr, decision_threshold, main, read_calibration

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "recipes", "VoxCeleb", "SpeakerRec")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data root, run folder): a model trained by the recipe on prepared own data."""
    base = tmp_path_factory.mktemp("cli")
    data = speaker_tree(str(base / "data"), speakers=9, sessions=2, per_session=3)
    run = base / "run"
    assert main(["prepare", "folder", data, "--save-folder", str(run / "save"),
                 "--test-speakers", "3", "--num-trials", "60"]) == 0
    train = [sys.executable, "train.py", "hparams/train_ecapa_angcl_small.yaml",
             f"--data_folder={data}", f"--output_folder={run}", "--skip_prep=True",
             "--speakers_per_batch=2", "--utterances_per_speaker=2", "--sentence_len=1.0",
             "--debug", "--device=cpu"]
    verify = [sys.executable, "verify.py", "hparams/verification.yaml",
              f"--data_folder={data}", f"--output_folder={run}", "--device=cpu",
              "--score_norm=null", f"--calibration_trials={run / 'save' / 'trials.txt'}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=RECIPE + os.pathsep + ROOT)
    for cmd in (train, verify):
        proc = subprocess.run(cmd, cwd=RECIPE, env=env, capture_output=True, text=True,
                              timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr[-4000:]
    return data, run


def speechbrain_model(folder, tmp_path):
    from speechbrain.inference.speaker import SpeakerRecognition
    from speechbrain.utils.fetching import FetchConfig

    return SpeakerRecognition.from_hparams(source=folder, savedir=str(tmp_path / "sb"),
                                           fetch_config=FetchConfig(allow_network=False))


def files_of(data, speaker):
    folder = os.path.join(data, speaker)
    return sorted(os.path.join(d, f) for d, _, names in os.walk(folder) for f in names)


def test_two_step_training_exports_a_calibrated_model(trained):
    _, run = trained
    model = run / "inference"
    assert (model / "embedding_model.ckpt").is_file()
    import yaml

    text = (model / "hyperparams.yaml").read_text()
    block = text[text.index("calibration:"):]
    calibration = yaml.safe_load(block.split("# ---")[0])["calibration"]
    assert read_calibration(model, {"calibration": calibration})["method"] == "linear"


def test_verify_matches_speechbrain(trained, tmp_path, capsys):
    data, run = trained
    model = str(run / "inference")
    a, b = files_of(data, "spk00")[:2]
    assert main(["verify", model, a, b]) == 0
    out = capsys.readouterr().out
    score = float(out.split("score (cosine): ")[1].split()[0])
    reference, _ = speechbrain_model(model, tmp_path).verify_files(a, b)
    assert score == pytest.approx(float(reference), abs=1e-4)
    # The calibrated LLR and the Bayes decision of the folder's calibration.
    import yaml

    text = (run / "inference" / "hyperparams.yaml").read_text()
    cal = yaml.safe_load(text[text.index("calibration:"):].split("# ---")[0])["calibration"]
    llr = float(calibrated_llr(cal, [float(reference)])[0])
    assert float(out.split("LLR: ")[1].split()[0]) == pytest.approx(llr, abs=5e-3)
    expected = "same speaker" if llr > decision_threshold(cal) else "different speakers"
    assert out.strip().endswith(f"decision: {expected}")
    # An explicit cosine threshold decides on the cosine instead.
    assert main(["verify", model, a, b, "--threshold", "-1"]) == 0
    assert capsys.readouterr().out.strip().endswith("decision: same speaker")
    assert main(["verify", model, a, b, "--threshold", "1.01"]) == 0
    assert capsys.readouterr().out.strip().endswith("decision: different speakers")


def test_score_and_embed_agree(trained, tmp_path, capsys):
    data, run = trained
    model = str(run / "inference")
    trials = (run / "save" / "trials.txt").read_text().split("\n")[:12]
    vox = tmp_path / "vox.txt"
    vox.write_text("\n".join(trials) + "\n")
    kaldi = tmp_path / "kaldi.txt"
    kaldi.write_text("".join(f"{e} {t} {'target' if lab == '1' else 'nontarget'}\n"
                             for lab, e, t in (line.split() for line in trials)))
    plain = tmp_path / "plain.txt"
    plain.write_text("".join(f"{e} {t}\n" for _, e, t in (line.split() for line in trials)))
    outputs = {}
    for name, path in (("vox", vox), ("kaldi", kaldi), ("plain", plain)):
        out = tmp_path / f"{name}.scores"
        assert main(["score", model, str(path), "--audio-root", data, "-o", str(out)]) == 0
        printed = capsys.readouterr().out
        assert ("EER" in printed) == (name != "plain")
        outputs[name] = [line.split() for line in out.read_text().splitlines()]
    assert [r[:4] for r in outputs["vox"]] == [r[:4] for r in outputs["kaldi"]] == outputs["plain"]
    assert [r[4] for r in outputs["vox"]] == [line.split()[0] for line in trials]

    # The scores are the cosines of the embeddings `embed` writes.
    files = sorted({os.path.join(data, r[k]) for r in outputs["vox"] for k in (0, 1)})
    npy = tmp_path / "emb.npy"
    assert main(["embed", model, *files, "-o", str(npy)]) == 0
    emb = torch.from_numpy(np.load(npy))
    assert emb.shape == (len(files), 96)
    row = {f: i for i, f in enumerate(files)}
    for enrol, test, score, *_ in outputs["vox"]:
        cos = torch.nn.functional.cosine_similarity(
            emb[row[os.path.join(data, enrol)]], emb[row[os.path.join(data, test)]], dim=0)
        assert float(score) == pytest.approx(float(cos), abs=1e-5)
    sb = speechbrain_model(model, tmp_path)
    reference = sb.encode_batch(sb.load_audio(files[0], savedir=str(tmp_path)).unsqueeze(0))
    torch.testing.assert_close(emb[0], reference.reshape(-1), rtol=1e-4, atol=1e-5)
    assert main(["embed", model, files[0], "-o", str(npy), "--normalize"]) == 0
    assert float(torch.from_numpy(np.load(npy)).norm()) == pytest.approx(1.0, abs=1e-5)


def test_other_rates_and_channels_are_converted(trained, tmp_path, capsys):
    data, run = trained
    first = files_of(data, "spk01")[0]
    wave, rate = sf.read(first)
    stereo = tmp_path / "stereo_32k.wav"  # the same audio at 32 kHz, two channels
    up = np.interp(np.arange(2 * len(wave)) / 2, np.arange(len(wave)), wave)
    sf.write(str(stereo), np.stack([up, up], axis=1), 2 * rate)
    assert main(["verify", str(run / "inference"), first, str(stereo), "--threshold", "0"]) == 0
    score = float(capsys.readouterr().out.split("score (cosine): ")[1].split()[0])
    assert score > 0.95


def test_errors_name_the_file(trained, tmp_path, capsys):
    data, run = trained
    model = str(run / "inference")
    good = files_of(data, "spk02")[0]
    assert main(["verify", model, good, str(tmp_path / "absent.wav")]) == 1
    assert f"audio file not found: {tmp_path / 'absent.wav'}" in capsys.readouterr().err
    broken = tmp_path / "broken.wav"
    broken.write_text("this is not audio")
    assert main(["verify", model, good, str(broken)]) == 1
    assert f"cannot read audio file {broken}" in capsys.readouterr().err
    assert main(["embed", model, good, str(broken), "-o", str(tmp_path / "e.npy")]) == 1
    assert str(broken) in capsys.readouterr().err
    trials = tmp_path / "trials.txt"
    trials.write_text("1 spk02/sess0/0.wav spk02/sess9/7.wav\n")
    assert main(["score", model, str(trials), "--audio-root", data]) == 1
    err = capsys.readouterr().err
    assert "names 1 utterance(s) not found" in err and "spk02/sess9/7.wav" in err
    assert main(["verify", str(tmp_path), good, good]) == 1
    assert "not a model folder" in capsys.readouterr().err


def test_a_hub_style_folder_loads_offline(trained, tmp_path, capsys):
    """A folder laid out like speechbrain/spkrec-ecapa-voxceleb: its pretrainer reads
    ``<pretrained_path>/...`` with ``pretrained_path: speechbrain/spkrec-ecapa-voxceleb``
    (a hub id); the command points it at the folder and downloads nothing."""
    import shutil

    data, run = trained
    folder = tmp_path / "spkrec-ecapa-voxceleb"
    folder.mkdir()
    for name in ("embedding_model.ckpt", "classifier.ckpt", "label_encoder.txt"):
        shutil.copy(run / "inference" / name, folder / name)
    text = (run / "inference" / "hyperparams.yaml").read_text()
    text = text[:text.index("# Files are looked up")]  # no pretrainer, no calibration
    text += """pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        classifier: !ref <classifier>
        label_encoder: !ref <label_encoder>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
        classifier: !ref <pretrained_path>/classifier.ckpt
        label_encoder: !ref <pretrained_path>/label_encoder.txt
pretrained_path: speechbrain/spkrec-ecapa-voxceleb
"""
    (folder / "hyperparams.yaml").write_text(text)
    a, b = files_of(data, "spk03")[:2]
    scores = []
    for model in (folder, run / "inference", folder):
        assert main(["verify", str(model), a, b]) == 0
        out = capsys.readouterr().out
        scores.append(out.split("score (cosine): ")[1].split()[0])
        assert ("no score calibration" in out) == (model == folder)
    assert scores[0] == scores[1] == scores[2]


def test_a_calibration_without_its_decision_prior_is_refused(tmp_path):
    from sb_angcl.cli import CommandError
    from sb_angcl.evaluation.calibrated import bayes_threshold

    (tmp_path / "calibration.yaml").write_text(
        "calibration:\n  method: linear\n  weights: [10.0]\n  offset: -5.0\n  prior: 0.05\n")
    with pytest.raises(CommandError, match="p_target"):
        read_calibration(tmp_path)
    (tmp_path / "calibration.yaml").write_text(
        "calibration:\n  method: qmf\n  weights: [10.0, 1.0, -1.0]\n  offset: -5.0\n"
        "  prior: 0.05\n  p_target: 0.05\n  max_seconds: 4.0\n")
    cal = read_calibration(tmp_path)
    assert decision_threshold(cal) == pytest.approx(bayes_threshold(0.05))
    # qmf durations are capped at max_seconds: 10 s counts as 4 s.
    capped = calibrated_llr(cal, [0.5], [10.0], [2.0])[0]
    assert capped == pytest.approx(-5.0 + 5.0 + math.log(4.0) - math.log(2.0))

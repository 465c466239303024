"""Packaging: the sdist and the wheel a maintainer publishes, and a recipe run on the wheel alone.

What ``python -m build`` does, without its isolated download of the build
backend: setuptools' PEP 517 hooks build the sdist from a copy of the
tracked files, then the wheel *from the unpacked sdist* (so a file missing
from the sdist breaks the wheel). The wheel is installed with pip
(``--no-deps --no-index``) into a fresh virtual environment outside the
repository; the dependencies (torch, SpeechBrain, ...) are not downloaded
again: that environment sees the test environment's site-packages through a
``.pth`` line, after its own, so ``sb_angcl`` is imported from the wheel and
nothing from the checkout is on the path. There, the ``sb-angcl`` console
script prepares a folder of speakers and the VoxCeleb recipe, taken from the
sdist as a user would take it, trains on it for a few batches and exports a
model.

What it does not prove: that pip resolves the dependencies from an index
(``install_requires`` is checked against the installed versions with
``pip check`` instead).
"""

import os
import site
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

import pytest
from test_own_data import speaker_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.slow


def run(cmd, **kwargs):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)  # nothing from the checkout
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600,
                          check=False, **kwargs)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def build(tmp_path):
    """(sdist, wheel, unpacked sdist folder), built as ``python -m build`` builds them."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=False).stdout.split(b"\0")
    if not tracked[0]:
        pytest.skip("not a git checkout: the tracked files are unknown")
    source = tmp_path / "checkout"
    for name in (n.decode() for n in tracked if n):
        if os.path.isfile(os.path.join(ROOT, name)):
            os.makedirs(source / os.path.dirname(name), exist_ok=True)
            with open(os.path.join(ROOT, name), "rb") as fin, open(source / name, "wb") as fout:
                fout.write(fin.read())
    dist = tmp_path / "dist"
    hook = "from setuptools import build_meta as b; print(b.build_{}({!r}))"
    sdist = run([sys.executable, "-c", hook.format("sdist", str(dist))], cwd=source).split()[-1]
    with tarfile.open(dist / sdist) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    unpacked = tmp_path / "unpacked" / sdist[: -len(".tar.gz")]
    wheel = run([sys.executable, "-c", hook.format("wheel", str(dist))], cwd=unpacked).split()[-1]
    return dist / sdist, dist / wheel, unpacked


def test_wheel_alone_runs_a_recipe(tmp_path):
    sdist, wheel, unpacked = build(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert "sb_angcl/cli.py" in names and "sb_angcl/data/own_data.py" in names
    assert all(n.startswith(("sb_angcl/", "sb_angcl-")) for n in names), names  # the library only
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "sb-angcl = sb_angcl.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
    for name in ("recipes/VoxCeleb/SpeakerRec/train.py", "README.md", "LICENSE"):
        assert (unpacked / name).is_file(), f"{name} is not in the sdist"

    # A fresh environment outside the repository, the wheel installed by pip.
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
         "--no-index", str(wheel)])
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    deps = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]]
            if os.path.isdir(p)]
    with open(os.path.join(purelib.strip(), "zz_test_dependencies.pth"), "w") as fout:
        fout.write("\n".join(dict.fromkeys(deps)) + "\n")
    where = run([str(python), "-c", "import sb_angcl, sys; print(sb_angcl.__file__)"], cwd=tmp_path)
    assert where.strip().startswith(str(venv)), where
    run([sys.executable, "-m", "pip", "--python", str(python), "check"])
    assert run([str(venv / "bin" / "sb-angcl"), "--version"]).strip().startswith("sb-angcl ")

    # The console script prepares a folder of speakers; the recipe from the sdist trains on it.
    data = speaker_tree(str(tmp_path / "data"), speakers=6, sessions=2, per_session=2)
    out = tmp_path / "run"
    run([str(venv / "bin" / "sb-angcl"), "prepare", "folder", data, "--save-folder",
         str(out / "save"), "--test-speakers", "2"], cwd=tmp_path)
    recipe = unpacked / "recipes" / "VoxCeleb" / "SpeakerRec"
    run([str(python), "train.py", "hparams/train_ecapa_angcl_small.yaml", f"--data_folder={data}",
         f"--output_folder={out}", "--skip_prep=True", "--speakers_per_batch=2",
         "--utterances_per_speaker=2", "--sentence_len=1.0", "--debug", "--device=cpu"],
        cwd=recipe)
    assert (out / "inference" / "embedding_model.ckpt").is_file()

"""The upstream contribution: ``tools/upstream.py`` (``make upstream SPEECHBRAIN=DIR``).

Without a SpeechBrain checkout: the layout script on a fake minimal checkout
(which files it writes, under which names, what it appends, that it refuses
to overwrite anything and writes nothing then) and the rows it appends.

With ``SPEECHBRAIN_CHECKOUT=/path/to/speechbrain`` (skipped otherwise; CI has
none): the checkout is copied to a temporary folder, the recipes are laid in,
``git status`` shows additions and appended lines only, SpeechBrain's own
consistency tests pass and its recipe-test runner runs every new row green.
Run it with an interpreter that has SpeechBrain installed from such a checkout
and sb-angcl beside it (docs/upstream.md)::

    SPEECHBRAIN_CHECKOUT=/path/to/speechbrain /path/to/venv/bin/python -m pytest tests/test_upstream.py
"""

import csv
import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOX = "recipes/VoxCeleb/SpeakerRec"
CN = "recipes/CNCeleb/SpeakerRec"
YAMLS = ("train_ecapa_angcl_small.yaml", "train_ecapa_angcl.yaml", "train_ecapa_aam.yaml",
         "finetune_ecapa_angcl_lm.yaml")
#: Every file the contribution adds, written out here (not taken from the script).
NEW_FILES = sorted(
    [f"{VOX}/{n}" for n in ("train_angcl.py", "angcl_voxceleb_prepare.py",
                            "extra_requirements.txt")]
    + [f"{CN}/{n}" for n in ("train_angcl.py", "cnceleb_prepare.py",
                             "cnceleb_short_utterances.py", "README.md", "extra_requirements.txt")]
    + [f"{d}/hparams/{y}" for d in (VOX, CN) for y in YAMLS]
    + ["tests/recipes/CNCeleb.csv"]
)
APPENDED = sorted([f"{VOX}/README.md", "tests/recipes/VoxCeleb.csv"])
HEADER = ("Task,Dataset,Script_file,Hparam_file,Data_prep_file,Readme_file,Result_url,HF_repo,"
          "test_debug_flags,test_debug_checks,performance")


def load_tool():
    """``tools/upstream.py`` as a module (tools/ is no package)."""
    spec = importlib.util.spec_from_file_location("sb_angcl_upstream_tool",
                                                  os.path.join(ROOT, "tools", "upstream.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_checkout(folder):
    """The few files of a SpeechBrain checkout the layout script looks at."""
    files = {
        "speechbrain/version.txt": "1.1.0\n",
        f"{VOX}/README.md": "# Speaker recognition with VoxCeleb\nupstream text\n",
        f"{VOX}/train_speaker_embeddings.py": "# upstream\n",
        "tests/recipes/VoxCeleb.csv": HEADER + "\nSpeaker_recognition,VoxCeleb,upstream,row,,,,,,,\n",
        "tests/utils/recipe_tests.py": "# upstream\n",
        "tests/samples/ASR/spk1_snt1.wav": "",
    }
    for path, text in files.items():
        target = os.path.join(folder, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w", encoding="utf-8") as fout:
            fout.write(text)
    return files


def tree(folder):
    """Relative path -> contents of every file under ``folder``."""
    found = {}
    for base, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(base, name)
            with open(path, encoding="utf-8") as fin:
                found[os.path.relpath(path, folder).replace(os.sep, "/")] = fin.read()
    return found


def test_layout_on_a_fake_checkout(tmp_path):
    tool = load_tool()
    before = fake_checkout(tmp_path)
    written = tool.lay(str(tmp_path))
    after = tree(tmp_path)

    assert sorted(p for p, mode in written if mode == "new") == NEW_FILES
    assert sorted(p for p, mode in written if mode == "append") == APPENDED
    assert sorted(set(after) - set(before)) == NEW_FILES
    # Appended files keep their contents as a prefix; the others are untouched.
    for path, text in before.items():
        if path in APPENDED:
            assert after[path].startswith(text) and len(after[path]) > len(text)
        else:
            assert after[path] == text
    # No file of ours lands under a name SpeechBrain uses.
    for name in ("train.py", "verify.py", "voxceleb_prepare.py"):
        assert f"{VOX}/{name}" not in after and f"{CN}/{name}" not in after

    # Renamed modules: the imports follow, every local import resolves in its folder.
    for folder in (VOX, CN):
        script = after[f"{folder}/train_angcl.py"]
        for module in re.findall(r"^from (\w+) import", script, flags=re.MULTILINE):
            if module.endswith("_prepare"):
                assert f"{folder}/{module}.py" in after, module
    assert re.search(r"^from voxceleb_prepare import", after[f"{VOX}/train_angcl.py"], re.M) is None
    assert "from angcl_voxceleb_prepare import prepare_voxceleb" in after[f"{VOX}/train_angcl.py"]
    assert "from cnceleb_prepare import prepare_cnceleb" in after[f"{CN}/train_angcl.py"]
    assert "from cnceleb_short_utterances import" in after[f"{CN}/cnceleb_prepare.py"]
    # YAML headers and the CN README name the scripts as laid out.
    for folder in (VOX, CN):
        header = after[f"{folder}/hparams/train_ecapa_angcl.yaml"].split("\n\n", 1)[0]
        assert "python train_angcl.py hparams/train_ecapa_angcl.yaml" in header
        assert "# Authors:" in header
    assert "python train_angcl.py" in after[f"{CN}/README.md"]
    assert re.search(r"(?<![\w.-])train\.py", after[f"{CN}/README.md"]) is None
    assert "sb-angcl" in after[f"{VOX}/extra_requirements.txt"]

    # The appended rows: four per corpus, one per YAML, the checkout's columns.
    rows = list(csv.DictReader(io.StringIO(after["tests/recipes/VoxCeleb.csv"])))
    assert [r["Script_file"] for r in rows[1:]] == [f"{VOX}/train_angcl.py"] * 4
    assert sorted(r["Hparam_file"] for r in rows[1:]) == sorted(f"{VOX}/hparams/{y}" for y in YAMLS)
    cn_rows = list(csv.DictReader(io.StringIO(after["tests/recipes/CNCeleb.csv"])))
    assert sorted(r["Hparam_file"] for r in cn_rows) == sorted(f"{CN}/hparams/{y}" for y in YAMLS)
    assert "<!-- sb-angcl" in after[f"{VOX}/README.md"]
    # The fine-tuning row starts from the output folder the runner gives the
    # train_ecapa_angcl.yaml row (tests/tmp/<Dataset>_row_<line>), wherever it lands.
    for dataset, table, folder in (("VoxCeleb", rows, VOX), ("CNCeleb", cn_rows, CN)):
        hparams = [r["Hparam_file"] for r in table]
        source = hparams.index(f"{folder}/hparams/train_ecapa_angcl.yaml") + 2
        finetune = table[hparams.index(f"{folder}/hparams/finetune_ecapa_angcl_lm.yaml")]
        assert f"--pretrained_model=tests/tmp/{dataset}_row_{source:02d}/inference" in \
            finetune["test_debug_flags"]


def test_refuses_to_overwrite_and_writes_nothing(tmp_path):
    tool = load_tool()
    fake_checkout(tmp_path)
    mine = tmp_path / VOX / "train_angcl.py"
    mine.write_text("# someone's own script\n", encoding="utf-8")
    before = tree(tmp_path)
    with pytest.raises(tool.LayoutError, match=r"train_angcl\.py exists.*clean checkout"):
        tool.lay(str(tmp_path))
    assert tree(tmp_path) == before


def test_refuses_a_second_lay(tmp_path):
    tool = load_tool()
    fake_checkout(tmp_path)
    tool.lay(str(tmp_path))
    once = tree(tmp_path)
    with pytest.raises(tool.LayoutError, match="already has the sb-angcl part"):
        tool.lay(str(tmp_path))
    assert tree(tmp_path) == once


def test_refuses_what_is_no_checkout(tmp_path):
    tool = load_tool()
    with pytest.raises(tool.LayoutError, match="not a SpeechBrain checkout"):
        tool.lay(str(tmp_path))
    assert os.listdir(tmp_path) == []
    assert tool.main([str(tmp_path)]) == 1


def test_refuses_other_csv_columns(tmp_path):
    tool = load_tool()
    fake_checkout(tmp_path)
    (tmp_path / "tests/recipes/VoxCeleb.csv").write_text("Task,Dataset\nx,y\n", encoding="utf-8")
    with pytest.raises(tool.LayoutError, match="has the columns"):
        tool.lay(str(tmp_path))


def test_rows_run_on_speechbrain_samples_offline():
    """The rows name SpeechBrain's own samples, skip preparation and download nothing."""
    for name in ("VoxCeleb.csv", "CNCeleb.csv"):
        with open(os.path.join(ROOT, "tools", "upstream_files", name), encoding="utf-8") as fin:
            text = fin.read()
        assert text.split("\n", 1)[0] == HEADER
        for row in csv.DictReader(io.StringIO(text)):
            flags = row["test_debug_flags"]
            assert "--skip_prep=True" in flags
            assert "--data_folder=tests/samples/ASR/" in flags
            assert "tests/tmp/corpus" not in flags and "http" not in flags
            for key in ("train_annotation", "valid_annotation"):
                assert f"--{key}=tests/samples/annotation/" in flags
            assert row["test_debug_checks"].startswith("file_exists=[train_angcl.py,")
            # Every file a row names exists in our repository under its original name.
            our_yaml = os.path.join(ROOT, row["Hparam_file"])
            assert os.path.isfile(our_yaml), our_yaml


def checkout_or_skip():
    path = os.environ.get("SPEECHBRAIN_CHECKOUT")
    if not path:
        pytest.skip("SPEECHBRAIN_CHECKOUT is not set: no SpeechBrain checkout to lay the recipes "
                    "into (docs/upstream.md says how to run this test)")
    if not os.path.isdir(os.path.join(path, ".git")):
        pytest.fail(f"SPEECHBRAIN_CHECKOUT={path} is not a git checkout of SpeechBrain")
    return path


def run(cmd, cwd, timeout=1800, env=None):
    """Run a command; fail the test with its output unless it succeeds."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env, check=False)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return proc.stdout + proc.stderr


def test_speechbrain_checks_pass_on_the_laid_checkout(tmp_path):
    source = checkout_or_skip()
    checkout = str(tmp_path / "speechbrain")
    shutil.copytree(source, checkout, symlinks=True,
                    ignore=shutil.ignore_patterns("tmp", "__pycache__"))
    assert run(["git", "status", "--porcelain"], checkout).strip() == "", \
        f"{source} has local changes: give a clean checkout"
    with open(os.path.join(checkout, "tests/recipes/VoxCeleb.csv"), encoding="utf-8") as fin:
        upstream_rows = len(list(csv.DictReader(fin)))
    run([sys.executable, os.path.join(ROOT, "tools", "upstream.py"), checkout], ROOT)

    # Additions and appended lines only.
    status = run(["git", "status", "--porcelain", "--untracked-files=all"], checkout).splitlines()
    modified = sorted(line[3:] for line in status if not line.startswith("??"))
    added = sorted(line[3:] for line in status if line.startswith("??"))
    assert modified == APPENDED and added == NEW_FILES
    for line in run(["git", "diff", "--numstat"], checkout).splitlines():
        inserted, deleted, _ = line.split("\t")
        assert int(inserted) > 0 and int(deleted) == 0, line

    env = dict(os.environ, OMP_NUM_THREADS="1",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    out = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "tests/consistency/test_yaml.py", "tests/consistency/test_recipe.py"], checkout, env=env)
    assert re.search(r"\d+ passed", out) and "failed" not in out, out[-2000:]

    # SpeechBrain's docstring check (its CI runs it on speechbrain/, tools/, templates/)
    # on the files we add.
    docstrings = ("import sys; from tests.utils.check_docstrings import check_docstrings; "
                  "sys.exit(0 if check_docstrings('.', ['_angcl', 'recipes/CNCeleb/']) else 1)")
    run(["python", "-c", docstrings], checkout, env=env)

    # SpeechBrain's YAML-load test on our rows. A fine-tuning YAML whose
    # pretrained_model is still a !PLACEHOLDER cannot load without a value;
    # it is left out here while it has one (the pretrainer work removes it).
    placeholder = [f"{d}/hparams/finetune_ecapa_angcl_lm.yaml" for d in (VOX, CN)
                   if "pretrained_model: !PLACEHOLDER" in open(
                       os.path.join(checkout, d, "hparams", "finetune_ecapa_angcl_lm.yaml"),
                       encoding="utf-8").read()]
    loader = (
        "from tests.utils.recipe_tests import load_yaml_test; "
        "ok = load_yaml_test(filters_fields=['Script_file'], "
        f"filters=[['{VOX}/train_angcl.py', '{CN}/train_angcl.py']], avoid_list={placeholder!r}); "
        "print('TEST PASSED' if ok else 'TEST FAILED!')"
    )
    out = run(["python", "-c", loader], checkout, env=env)
    assert "TEST PASSED" in out, out[-4000:]

    runner = (
        "from tests.utils.recipe_tests import run_recipe_tests; "
        "ok = run_recipe_tests(run_opts='--device=cpu', do_checks=True, "
        "filters_fields=['Script_file'], "
        f"filters=[['{VOX}/train_angcl.py', '{CN}/train_angcl.py']]); "
        "print('TEST PASSED' if ok else 'TEST FAILED!')"
    )
    out = run(["python", "-c", runner], checkout, env=env)
    assert "TEST PASSED" in out, out[-6000:]
    ran = re.findall(r"Running test for (\w+)", out)
    # Our rows, and only they: SpeechBrain numbers rows from 02 (the line after the header).
    first = upstream_rows + 2
    assert sorted(ran) == [f"CNCeleb_row_{i:02d}" for i in range(2, 6)] + [
        f"VoxCeleb_row_{i:02d}" for i in range(first, first + 4)]

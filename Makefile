# sb-angcl: `make demo` (built-in corpus -> train -> verify -> export) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(CURDIR)/$(VENV)/bin/python
DEMO ?= $(CURDIR)/demo
DEMO_ARGS ?=
DEMO_CORPUS_ARGS ?=
# Torch threads for the demo: one is robust on a shared 2-core machine (two
# threads per process collapse as soon as anything else runs).
DEMO_THREADS ?= 1
VOX := recipes/VoxCeleb/SpeakerRec
CN := recipes/CNCeleb/SpeakerRec

.PHONY: venv test demo demo-cnceleb lint bench clean

# Create (or reuse) the virtual environment; reinstall when setup.cfg changes.
$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# The whole suite: unit, recipe, DDP and reliability tests plus the doctests of sb_angcl.
test: venv
	$(PY) -m pytest -q tests sb_angcl

lint: venv
	$(PY) -m ruff check sb_angcl recipes tests benchmarks

# Generate the built-in corpus, train the small paper system on it, score the
# trials (EER, minDCF) and export a SpeechBrain inference folder.
demo: venv
	@export OMP_NUM_THREADS=$(DEMO_THREADS); start=$$(date +%s); \
	$(PY) -m sb_angcl.synthetic --output $(DEMO)/corpus --layout voxceleb $(DEMO_CORPUS_ARGS) && \
	cd $(VOX) && \
	$(PY) train.py hparams/train_ecapa_angcl_small.yaml \
	    --data_folder=$(DEMO)/corpus/VoxCeleb1 --output_folder=$(DEMO)/results $(DEMO_ARGS) && \
	$(PY) verify.py hparams/train_ecapa_angcl_small.yaml \
	    --data_folder=$(DEMO)/corpus/VoxCeleb1 --output_folder=$(DEMO)/results $(DEMO_ARGS) && \
	echo "Exported model: $(DEMO)/results/inference (SpeakerRecognition.from_hparams(source=...))" && \
	echo "Demo wall time: $$(( $$(date +%s) - start )) s"

# The same on the CN-Celeb layout (multi-genre, both enrolment protocols).
demo-cnceleb: venv
	@export OMP_NUM_THREADS=$(DEMO_THREADS); start=$$(date +%s); \
	$(PY) -m sb_angcl.synthetic --output $(DEMO)/corpus --layout cnceleb $(DEMO_CORPUS_ARGS) && \
	cd $(CN) && \
	$(PY) train.py hparams/train_ecapa_angcl_small.yaml \
	    --data_folder=$(DEMO)/corpus --output_folder=$(DEMO)/results_cnceleb $(DEMO_ARGS) && \
	$(PY) verify.py hparams/train_ecapa_angcl_small.yaml \
	    --data_folder=$(DEMO)/corpus --output_folder=$(DEMO)/results_cnceleb $(DEMO_ARGS) && \
	$(PY) verify.py hparams/train_ecapa_angcl_small.yaml \
	    --data_folder=$(DEMO)/corpus --output_folder=$(DEMO)/results_cnceleb --enrol_protocol=average $(DEMO_ARGS) && \
	echo "Demo wall time: $$(( $$(date +%s) - start )) s"

clean:
	rm -rf $(DEMO) results

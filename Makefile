# sb-angcl: `make demo` (built-in corpus -> train -> verify -> export) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(CURDIR)/$(VENV)/bin/python
DEMO ?= $(CURDIR)/demo
DEMO_ARGS ?=
DEMO_CORPUS_ARGS ?=
# Torch threads for the demo: `auto` takes every core when the machine is idle
# (1-minute load average below 0.5 when the demo starts, before its own
# install) and one otherwise: two threads per process collapse on this 2-core
# machine as soon as anything else runs.
DEMO_THREADS ?= auto
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
# trials (EER, minDCF) and export a SpeechBrain inference folder; prints the
# wall time of each stage (install, corpus, training, scoring).
demo:
	@t0=$$(date +%s); \
	threads=$(DEMO_THREADS); load=$$(cut -d' ' -f1 /proc/loadavg); \
	if [ "$$threads" = auto ]; then \
	    threads=$$($(PYTHON) -c 'import os; print(os.cpu_count() if os.getloadavg()[0] < 0.5 else 1)'); fi; \
	$(MAKE) --no-print-directory venv || exit 1; t1=$$(date +%s); \
	export OMP_NUM_THREADS=$$threads; echo "Demo: $$threads torch thread(s) (1-minute load average at the start: $$load)"; \
	$(PY) -m sb_angcl.synthetic --output $(DEMO)/corpus --layout voxceleb $(DEMO_CORPUS_ARGS) || exit 1; \
	t2=$$(date +%s); cd $(VOX) && \
	$(PY) train.py hparams/train_ecapa_angcl_small.yaml \
	    --data_folder=$(DEMO)/corpus/VoxCeleb1 --output_folder=$(DEMO)/results $(DEMO_ARGS) || exit 1; \
	t3=$$(date +%s); \
	$(PY) verify.py hparams/train_ecapa_angcl_small.yaml \
	    --data_folder=$(DEMO)/corpus/VoxCeleb1 --output_folder=$(DEMO)/results $(DEMO_ARGS) || exit 1; \
	t4=$$(date +%s); \
	echo "Exported model: $(DEMO)/results/inference (model card: README.md there; SpeakerRecognition.from_hparams(source=...))"; \
	echo "Demo wall time: install $$((t1 - t0)) s, corpus $$((t2 - t1)) s, training $$((t3 - t2)) s, scoring $$((t4 - t3)) s; total $$((t4 - t0)) s ($$threads thread(s), nproc $$(nproc))"

# The same on the CN-Celeb layout (multi-genre, both enrolment protocols).
demo-cnceleb: venv
	@threads=$(DEMO_THREADS); [ "$$threads" = auto ] && threads=1; \
	export OMP_NUM_THREADS=$$threads; start=$$(date +%s); \
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

# sb-angcl: `make demo` (built-in corpus -> train -> verify -> export) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(CURDIR)/$(VENV)/bin/python
DEMO ?= $(CURDIR)/demo
DEMO_ARGS ?=
# Overrides of hparams/verification.yaml for the demo's scoring (e.g. --score_norm=as-norm).
VERIFY_ARGS ?=
DEMO_CORPUS_ARGS ?=
# Torch threads for the demo: `auto` takes every core this process may run on
# (os.sched_getaffinity), whatever the load; set DEMO_THREADS=1 on a busy
# machine (two threads per process collapse on 2 cores as soon as anything
# else runs).
DEMO_THREADS ?= auto
# The cores this process may run on, counted before OMP_NUM_THREADS is set
# (GNU nproc reports OMP_NUM_THREADS when it is set).
CORES_PY := import os; print(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
# One corpus and one results folder per layout and per DEMO_CORPUS_ARGS, so
# that any sequence of demo targets works; the generator reuses a folder's
# corpus when its settings match and replaces it otherwise (--replace-stale).
DEMO_TAG := $(if $(strip $(DEMO_CORPUS_ARGS)),_$(shell printf '%s' '$(DEMO_CORPUS_ARGS)' | tr -cs 'A-Za-z0-9.' '_' | sed 's/^_//; s/_$$//'))
VOX_CORPUS := $(DEMO)/corpus_voxceleb$(DEMO_TAG)
CN_CORPUS := $(DEMO)/corpus_cnceleb$(DEMO_TAG)
VOX_RESULTS := $(DEMO)/results$(DEMO_TAG)
CN_RESULTS := $(DEMO)/results_cnceleb$(DEMO_TAG)
VOX := recipes/VoxCeleb/SpeakerRec
CN := recipes/CNCeleb/SpeakerRec

.PHONY: venv test demo demo-cnceleb lint clean upstream

# Create (or reuse) the virtual environment; reinstall when setup.cfg changes.
$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# The whole suite: unit, recipe, DDP and reliability tests plus the doctests of sb_angcl and of
# the corpus generator (synthetic_corpus/, run from the repository root; not installed).
test: venv
	$(PY) -m pytest -q tests sb_angcl synthetic_corpus

lint: venv
	$(PY) -m ruff check sb_angcl synthetic_corpus recipes tests benchmarks tools

# Generate the built-in corpus, train the small paper system on it, score the
# trials (EER, minDCF) and export a SpeechBrain inference folder; prints the
# wall time of each stage (install, corpus, training, scoring).
demo:
	@t0=$$(date +%s); \
	cores=$$($(PYTHON) -c '$(CORES_PY)'); threads=$(DEMO_THREADS); \
	if [ "$$threads" = auto ]; then threads=$$cores; fi; \
	$(MAKE) --no-print-directory venv || exit 1; t1=$$(date +%s); \
	export OMP_NUM_THREADS=$$threads; \
	echo "Demo: $$threads torch thread(s) ($$cores core(s) available to this process; 1-minute load average $$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo ?))"; \
	$(PY) -m synthetic_corpus --output $(VOX_CORPUS) --layout voxceleb --replace-stale $(DEMO_CORPUS_ARGS) || exit 1; \
	t2=$$(date +%s); cd $(VOX) && \
	$(PY) train.py hparams/train_ecapa_angcl_small.yaml \
	    --data_folder=$(VOX_CORPUS)/VoxCeleb1 --output_folder=$(VOX_RESULTS) $(DEMO_ARGS) || exit 1; \
	t3=$$(date +%s); \
	$(PY) verify.py hparams/verification.yaml \
	    --data_folder=$(VOX_CORPUS)/VoxCeleb1 --output_folder=$(VOX_RESULTS) $(VERIFY_ARGS) || exit 1; \
	t4=$$(date +%s); \
	echo "Exported model: $(VOX_RESULTS)/inference (model card: README.md there; SpeakerRecognition.from_hparams(source=...))"; \
	echo "Demo wall time: install $$((t1 - t0)) s, corpus $$((t2 - t1)) s, training $$((t3 - t2)) s, scoring $$((t4 - t3)) s; total $$((t4 - t0)) s ($$threads thread(s), $$cores core(s))"

# The same on the CN-Celeb layout (multi-genre, both enrolment protocols).
demo-cnceleb:
	@t0=$$(date +%s); \
	cores=$$($(PYTHON) -c '$(CORES_PY)'); threads=$(DEMO_THREADS); \
	if [ "$$threads" = auto ]; then threads=$$cores; fi; \
	$(MAKE) --no-print-directory venv || exit 1; t1=$$(date +%s); \
	export OMP_NUM_THREADS=$$threads; \
	echo "Demo: $$threads torch thread(s) ($$cores core(s) available to this process; 1-minute load average $$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo ?))"; \
	$(PY) -m synthetic_corpus --output $(CN_CORPUS) --layout cnceleb --replace-stale $(DEMO_CORPUS_ARGS) || exit 1; \
	t2=$$(date +%s); cd $(CN) && \
	$(PY) train.py hparams/train_ecapa_angcl_small.yaml \
	    --data_folder=$(CN_CORPUS) --output_folder=$(CN_RESULTS) $(DEMO_ARGS) || exit 1; \
	t3=$$(date +%s); \
	$(PY) verify.py hparams/verification.yaml \
	    --data_folder=$(CN_CORPUS) --output_folder=$(CN_RESULTS) $(VERIFY_ARGS) || exit 1; \
	$(PY) verify.py hparams/verification.yaml \
	    --data_folder=$(CN_CORPUS) --output_folder=$(CN_RESULTS) --enrol_protocol=average $(VERIFY_ARGS) || exit 1; \
	t4=$$(date +%s); \
	echo "Exported model: $(CN_RESULTS)/inference"; \
	echo "Demo wall time: install $$((t1 - t0)) s, corpus $$((t2 - t1)) s, training $$((t3 - t2)) s, scoring $$((t4 - t3)) s; total $$((t4 - t0)) s ($$threads thread(s), $$cores core(s))"

# Lay the recipes into a SpeechBrain checkout as a contribution (docs/upstream.md):
# new files, rows appended to tests/recipes/VoxCeleb.csv, a README section.
upstream:
	@test -n "$(SPEECHBRAIN)" || { echo "usage: make upstream SPEECHBRAIN=/path/to/speechbrain (a clean checkout)"; exit 2; }
	$(PYTHON) tools/upstream.py $(SPEECHBRAIN)

clean:
	rm -rf $(DEMO) results

# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=

export TOKENIZERS_PARALLELISM = false
export HF_HUB_OFFLINE ?= 1

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU torch first, pinned: pip takes the local CPU build instead of the CUDA wheels.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

# WordNet for the eda augmenter: Debian's wordnet-base, read through nltk (dcls_core/baselines.py)
WORDNET_DIR ?= /usr/share/wordnet
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: install demo test wordnet
install: $(STAMP) wordnet

wordnet:
	@test -f $(WORDNET_DIR)/data.noun || { \
	  echo "installing Debian's wordnet-base (WordNet for augment.method=eda)"; \
	  $(SUDO) apt-get install -y -q --no-install-recommends wordnet-base >/dev/null || \
	  { $(SUDO) apt-get update -q >/dev/null && \
	    $(SUDO) apt-get install -y -q --no-install-recommends wordnet-base >/dev/null; }; }
	@test -f $(WORDNET_DIR)/data.noun || { echo "error: no WordNet in $(WORDNET_DIR): install Debian's" \
	  "wordnet-base (apt-get install wordnet-base), or set WORDNET_DIR and augment.eda.wordnet_dir"; exit 1; }

demo: $(STAMP)
	$(PY) jobs/pipeline.py experiment=demo $(ARGS)

# Test files run on TEST_WORKERS processes (pytest-xdist; a file's tests stay together): most of
# the suite waits on Ray and process start-up, so 2 processes on 2 cores overlap the waits.
TEST_WORKERS ?= 2

test: $(STAMP) wordnet
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(ARGS)

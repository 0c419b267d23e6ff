# Entry points for a new checkout. Every target creates .venv with the system
# python3 on first use and installs jaxlab into it in editable mode, with the
# test, multi-agent (jaxmarl) and offline-RL (Meta-World, brax) extras.
#
#   make install                 create .venv and pip install -e '.[test,marl,offline-rl]'
#   make demo [METHOD=polar]     run one method's quick experiment
#   make test [PYTEST_ARGS=...]  the test suite on 2 workers and 8 host devices
#   make bench [BENCHMARKS=...]  run the benchmark scripts

PYTHON_SYSTEM ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
# Written after a successful install; setup.cfg or pyproject.toml being newer
# than it triggers a new install.
INSTALL_STAMP := $(VENV)/.jaxlab-install-stamp

# Quick config of each method's demo, selected with METHOD=<name>.
METHOD ?= polar
DEMO_CONFIG_polar := configs/polar/awgn_bler.py:quick
DEMO_CONFIG_vne := configs/vne/baselines.py:quick
DEMO_CONFIG_conal := configs/vne/conal.py:quick
DEMO_CONFIG_commformer := configs/commformer/smax.py:quick
DEMO_CONFIG_zo := configs/zo/finetune.py:quick
DEMO_CONFIG_offline_rl := configs/offline_rl/prompt_dt.py:quick
DEMO_CONFIG := $(DEMO_CONFIG_$(METHOD))
DEMO_METHODS := $(patsubst DEMO_CONFIG_%,%,$(filter DEMO_CONFIG_%,$(.VARIABLES)))
DEMO_WORKDIR := runs/demo/$(METHOD)

# Slow tests (marked `slow`) are left out; PYTEST_ARGS= runs everything.
PYTEST_ARGS ?= -m "not slow"

# Peer comparisons (benchmarks/polar_sionna.py) need a separate venv; docs/benchmarks.md shows how.
BENCHMARKS ?= benchmarks/polar_reference_bler.py

.PHONY: install wordnet demo test bench

$(PYTHON):
	$(PYTHON_SYSTEM) -m venv $(VENV) || { \
	  echo "error: '$(PYTHON_SYSTEM) -m venv' failed; install Python's venv module (Debian: apt-get install python3-venv)" >&2; \
	  rm -rf $(VENV); exit 1; }

$(INSTALL_STAMP): setup.cfg pyproject.toml | $(PYTHON)
	$(PYTHON) -m pip install --quiet -e '.[test,marl,offline-rl]'
	touch $@

# WordNet's database files feed the offline text suite (jaxlab.data.text). They
# come from Debian's wordnet-base package; without root or apt-get the text
# tests skip and say so.
WORDNET_DIR ?= /usr/share/wordnet
wordnet:
	@if [ ! -f $(WORDNET_DIR)/data.noun ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -q wordnet-base >/dev/null || \
	      { apt-get update -q >/dev/null && apt-get install -y -q wordnet-base >/dev/null; } || \
	      echo "warning: could not install wordnet-base; the WordNet text tests will skip" >&2; \
	  else \
	    echo "note: $(WORDNET_DIR)/data.noun not found; install Debian's wordnet-base (or set WNSEARCHDIR) for the WordNet text tests" >&2; \
	  fi; \
	fi

install: $(INSTALL_STAMP) wordnet

demo: $(INSTALL_STAMP)
	@if [ -z "$(DEMO_CONFIG)" ]; then \
	  echo "error: no demo for METHOD=$(METHOD); choose one of: $(DEMO_METHODS)" >&2; exit 2; fi
	$(PYTHON) -m launch.main --config=$(DEMO_CONFIG) --workdir=$(DEMO_WORKDIR)
	@echo "Results of the $(METHOD) demo are in $(DEMO_WORKDIR)/ (results.json holds the summary):"
	@ls $(DEMO_WORKDIR)

test: $(INSTALL_STAMP) wordnet
	XLA_FLAGS=--xla_force_host_platform_device_count=8 $(PYTHON) -m pytest -n 2 $(PYTEST_ARGS) tests

bench: $(INSTALL_STAMP)
	@if [ -z "$(strip $(BENCHMARKS))" ]; then echo "No benchmark scripts in benchmarks/."; fi
	@for script in $(BENCHMARKS); do \
	  echo "== $$script"; \
	  $(PYTHON) $$script || exit 1; \
	done

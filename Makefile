# Two commands: `make book` and `make test`. Both create .venv from the lock file
# locks/$(DEVICE).txt (every package at one version) when it is missing or stale: the stamp file
# is older than pyproject.toml or the lock, or another DEVICE's stamp replaced it.
# uv installs the lock (a clean clone's install took 46-56 s with uv against 85-101 s with pip
# here); uv itself comes from PyPI at UV_VERSION. --no-compile (and uv, which compiles nothing
# unless asked): Python compiles what it imports on first use (into .cache/pycache); compiling
# every installed module up front took about 3 of the install's 5 minutes here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# make DEVICE=gpu: TensorFlow with CUDA (extra gpu, locks/gpu.txt) instead of the CPU build.
DEVICE ?= cpu
LOCK := locks/$(DEVICE).txt
# The stamp names the device: another DEVICE finds no stamp and syncs the environment to its lock.
STAMP := $(VENV)/.installed-$(DEVICE)
UV_VERSION := 0.13.9
UV := $(VENV)/bin/uv
PRESET ?= demo
DATASET ?= synthetic
ROOT ?=
BOOK_ARGS = --preset $(PRESET) --dataset $(DATASET) $(if $(ROOT),--root $(ROOT))
# make book JOBS=1: chapters executed one at a time (default: one per core, at most 2).
JOBS ?=
# make book SET="learning_rate=1e-4 max_steps=600": chapter parameters for every chapter that has them.
SET ?=
# make book EXECUTOR=local:2 | serial | dask://HOST:PORT: where the book's runs train.
EXECUTOR ?=

# Tool caches and configuration live inside the project tree.
export MPLCONFIGDIR := $(CURDIR)/.cache/matplotlib
export IPYTHONDIR := $(CURDIR)/.cache/ipython
export JUPYTER_CONFIG_DIR := $(CURDIR)/.cache/jupyter/config
export JUPYTER_DATA_DIR := $(CURDIR)/.cache/jupyter/data
export JUPYTER_RUNTIME_DIR := $(CURDIR)/.cache/jupyter/runtime
export KERAS_HOME := $(CURDIR)/.cache/keras
export XDG_CACHE_HOME := $(CURDIR)/.cache
export PIP_CACHE_DIR := $(CURDIR)/.cache/pip
export UV_CACHE_DIR := $(CURDIR)/.cache/uv
export PYTHONPYCACHEPREFIX := $(CURDIR)/.cache/pycache
# Some machines (the one this project is measured on among them) set PYTHONDONTWRITEBYTECODE=1: then no process
# keeps what it compiled, and each of the ~40 processes a `make test` starts (notebook kernels,
# run workers, test subprocesses) compiled TensorFlow, Keras and pandas again: about 28 s an
# import here against 9 s from .cache/pycache.
unexport PYTHONDONTWRITEBYTECODE
export TF_CPP_MIN_LOG_LEVEL := 2
export PYDEVD_DISABLE_FILE_VALIDATION := 1
# TensorFlow's absl start-up lines ignore TF_CPP_MIN_LOG_LEVEL; every kernel and run worker
# printed them. The long commands run through this filter (dlga/quiet.py), which drops only them.
QUIET = $(PY) -m dlga.quiet
# The lock the environment came from: the Status page and `verify` show its hash (dlga.settings).
export DLGA_LOCK := $(CURDIR)/$(LOCK)

.PHONY: help venv lock test test-fast book bench data pages publish cross-cpu clean distclean

help:
	@echo "make book    build the HTML book (PRESET=demo|ci|paper) into _build/html"
	@echo "make test    run pytest and nbval (the ci preset)"
	@echo "make bench   print the benchmark tables and write bench/*.json"
	@echo "make pages   check that the built book's tables and code fit the page (needs chromium)"
	@echo "make data    make the synthetic cohort and preprocess it (PRESET=$(PRESET))"
	@echo "make publish push the built book to the $(BRANCH) branch of $(REMOTE) (GitHub Pages)"
	@echo "make cross-cpu  two books from clean clones, native and ISA=$(ISA), and their verdicts side by side (hours)"
	@echo "make lock    resolve pyproject.toml again into locks/cpu.txt and locks/gpu.txt (UPGRADE=1: newest versions)"
	@echo "DEVICE=gpu   with any of them: TensorFlow with CUDA from locks/gpu.txt (default DEVICE=cpu)"

# uv, from PyPI into .venv (again when the Makefile changes, e.g. UV_VERSION).
$(UV): Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet "pip>=23.2"
	$(PY) -m pip install --quiet --no-compile "uv==$(UV_VERSION)"
	@touch $(UV)

# The locks are resolved for Python 3.11 (make lock): another Python stops here with what to do.
# `uv pip sync` makes .venv exactly the lock: it removes what the lock lacks, so DEVICE=gpu
# replaces tensorflow-cpu by tensorflow and its CUDA packages (the two install the same
# `tensorflow/` package and cannot sit side by side), and DEVICE=cpu takes them out again.
$(STAMP): pyproject.toml $(LOCK) | $(UV)
	@$(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { echo "$(VENV) runs Python \
	  $$($(PY) -c 'import platform; print(platform.python_version())'); $(LOCK) is resolved for Python 3.11: \
	  rm -rf $(VENV) && make PYTHON=python3.11 (or pip install -e '.[$(DEVICE),book,test]' for pyproject's ranges)" >&2; exit 1; }
	$(UV) pip sync --quiet --python $(PY) $(LOCK)
	$(UV) pip install --quiet --python $(PY) --no-deps -e ".[$(DEVICE),book,test]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	@rm -f $(VENV)/.installed*
	@touch $(STAMP)

venv: $(STAMP)

# make lock: resolve pyproject.toml's ranges again into locks/cpu.txt and locks/gpu.txt, for
# Python 3.11 on Linux x86_64. Run it after changing a range in pyproject.toml (pins that still
# fit are kept), or with UPGRADE=1 to move every package to its newest version in range. New
# TensorFlow, Keras or numpy versions change the run ids (they hash those versions), so the next
# `make book` trains its runs again, and the numbers may move: commit the locks with the new
# numbers. The gpu lock is held to the cpu lock's versions (-c): the two environments differ
# only in TensorFlow's build and the CUDA packages.
LOCK_FOR := --python-version 3.11 --python-platform x86_64-manylinux_2_28
define resolve
	$(UV) pip compile --quiet --no-header pyproject.toml --extra $(1) --extra book --extra test $(2) \
	  $(LOCK_FOR) $(if $(UPGRADE),--upgrade) -o locks/$(1).txt
	{ echo '# locks/$(1).txt: every package of the DEVICE=$(1) environment (pyproject.toml with the extras $(1),book,test) at one version.'; \
	  echo '# Resolved by `make lock` (uv $(UV_VERSION) pip compile $(LOCK_FOR)):'; \
	  echo '# for Python 3.11 on Linux x86_64 (glibc 2.28 or newer). pyproject.toml allows Python >=3.10,<3.13; this file is for 3.11 only.'; \
	  echo '# `make` installs it with `uv pip sync`; `make lock` writes it again (see the Makefile for when).'; \
	  cat locks/$(1).txt; } > locks/$(1).txt.new && mv locks/$(1).txt.new locks/$(1).txt
endef
lock: $(UV)
	$(call resolve,cpu)
	$(call resolve,gpu,-c locks/cpu.txt)

# pytest (unit tests and the ci book: runs, notebooks, HTML), then nbval on every chapter at
# the ci preset (reusing the ci runs): only cells tagged nbval-check-output are compared.
# Both spread over TEST_JOBS processes (pytest-xdist): whole test files (the ci book's tests
# share one build) and whole notebooks (their cells run in order) stay on one process.
# make test TEST_JOBS=0: everything in this process, one test after another.
TEST_JOBS ?= 2
# The tests' runs, stores and book build live in one named cache, never in runs/, data/ or
# _build/ (tests/conftest.py sets the same folders for a bare pytest).
TEST_CACHE := $(CURDIR)/.cache/test
test: export DLGA_RUNS := $(TEST_CACHE)/runs
test: export DLGA_DATA := $(TEST_CACHE)/data
test: export DLGA_BUILD := $(TEST_CACHE)/build
test: $(STAMP)
	$(QUIET) $(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile tests
	$(QUIET) $(PY) -m pytest -q -n $(TEST_JOBS) --dist loadscope --nbval-lax book/

# make book [PRESET=demo|ci|paper] [DATASET=synthetic|avec2013|avec2014 ROOT=DIR] [SET="NAME=VALUE ..."] [EXECUTOR=...]
book: $(STAMP)
	$(QUIET) $(PY) -m dlga.book build $(BOOK_ARGS) $(foreach s,$(SET),--set $(s)) $(if $(EXECUTOR),--executor $(EXECUTOR)) $(if $(JOBS),--jobs $(JOBS))

# make pages [SCREENSHOTS=DIR]: do the built book's tables and code fit the text column at 1400
# and 800 px? Measured in headless Chromium (apt-get install chromium), so not part of make test.
pages: $(STAMP)
	$(PY) -m dlga.book pages --html $(or $(DLGA_BUILD),_build)/html $(if $(SCREENSHOTS),--screenshots $(SCREENSHOTS))

bench: $(STAMP)
	$(QUIET) $(PY) -m dlga bench --out bench/dlga.json
	$(QUIET) $(PY) -m data_prep bench --out bench/data_prep.json

data: $(STAMP)
	$(QUIET) $(PY) -m dlga.book data $(BOOK_ARGS)

# make publish [REMOTE=origin] [BRANCH=gh-pages] [BUILD_HTML=DIR]: the HTML that `make book`
# built becomes the next commit of BRANCH and is pushed to REMOTE, with ghp-import as
# jupyter-book 1 documents it (-n: a .nojekyll file, so GitHub Pages serves _static/ as is;
# -p: push; -f: force the push). REMOTE and BRANCH are set with `=`, not `?=`, so a BRANCH or
# REMOTE in the environment (some CI services set BRANCH) can never force-push HTML over a
# code branch; the command line still overrides them.
REMOTE = origin
BRANCH = gh-pages
BUILD_HTML ?= $(or $(DLGA_BUILD),_build)/html
publish:
	@test -f "$(BUILD_HTML)/index.html" || { echo "make publish: $(BUILD_HTML)/index.html is missing; run make book first" >&2; exit 1; }
	@test "$(BRANCH)" != "$$(git rev-parse --abbrev-ref HEAD 2>/dev/null)" || { echo "make publish: BRANCH=$(BRANCH) is the branch checked out here; publish to another (default gh-pages)" >&2; exit 1; }
	@$(PY) -c "import ghp_import" 2>/dev/null || { echo "make publish: ghp-import is not installed in $(PY); install the book extra again (make venv) or: $(PY) -m pip install ghp-import" >&2; exit 1; }
	$(PY) -m ghp_import -n -p -f -r "$(REMOTE)" -b "$(BRANCH)" -m "the book, built from $$(git rev-parse --short HEAD 2>/dev/null || echo an unknown commit)" "$(BUILD_HTML)"
	@echo "published $(BUILD_HTML) to the $(BRANCH) branch of $(REMOTE)"

# make cross-cpu [ISA=AVX2] [PRESET=demo]: do the verdicts reproduce on another CPU? Two clean
# clones of HEAD (commit first) under $(CROSS_DIR), one built natively and one with oneDNN
# limited to ISA (run ids include the switch, so each clone trains its own runs; hours on 2
# cores), each writes its headline (python -m dlga.book reference --out), and the two are printed
# side by side. Interrupted, it resumes: the clones and their runs are kept.
ISA ?= AVX2
CROSS_DIR ?= $(CURDIR)/.cache/cross-cpu
cross-cpu: $(STAMP)
	@for side in native $(ISA); do test -d $(CROSS_DIR)/$$side || git clone -q $(CURDIR) $(CROSS_DIR)/$$side || exit 1; done
	$(MAKE) -C $(CROSS_DIR)/native book PRESET=$(PRESET)
	cd $(CROSS_DIR)/native && .venv/bin/python -m dlga.quiet .venv/bin/python -m dlga.book reference --preset $(PRESET) --out $(CROSS_DIR)/native.json
	ONEDNN_MAX_CPU_ISA=$(ISA) $(MAKE) -C $(CROSS_DIR)/$(ISA) book PRESET=$(PRESET)
	cd $(CROSS_DIR)/$(ISA) && ONEDNN_MAX_CPU_ISA=$(ISA) .venv/bin/python -m dlga.quiet .venv/bin/python -m dlga.book reference --preset $(PRESET) --out $(CROSS_DIR)/$(ISA).json
	$(PY) -m dlga.book verdicts $(CROSS_DIR)/native.json $(CROSS_DIR)/$(ISA).json --labels native $(ISA)

clean:
	rm -rf _build .pytest_cache .cache/pycache

distclean: clean
	rm -rf $(VENV) .cache data runs bench

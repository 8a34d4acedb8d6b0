# The two commands a newcomer needs: `make demo` and `make test`.
# Everything Python runs from a project virtual environment (.venv), so this works on systems
# whose Python refuses `pip install` outside one (PEP 668, e.g. Debian 12+ / Ubuntu 23.04+).
SYSTEM_PYTHON ?= python3
VENV ?= .venv
PYTHON := $(abspath $(VENV))/bin/python
export NOTIFIER_CACHE ?= $(HOME)/.cache/notifier
export PATH := $(abspath $(VENV))/bin:$(NOTIFIER_CACHE)/bin:$(PATH)

.PHONY: deps tools demo test test-long test-fast lint lock

$(PYTHON):
	@$(SYSTEM_PYTHON) -m venv $(VENV) || { \
	  echo "cannot create $(VENV): install the venv module (Debian/Ubuntu: apt-get install python3-venv)" >&2; \
	  exit 1; }

# Reinstalled when pyproject.toml changes.
$(VENV)/.deps: pyproject.toml | $(PYTHON)
	@$(PYTHON) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

deps: $(VENV)/.deps  ## the package (editable) and its test dependencies, in .venv (idempotent)

tools: | $(PYTHON)  ## promtool, kcat, helm, kubeconform, Java + Maven (idempotent; needs root for apt)
	@PYTHON=$(PYTHON) bash scripts/install-tools.sh

demo: deps  ## the main job on the embedded default: simulator + SQLite + stdout
	@PYTHON=$(PYTHON) bash scripts/demo.sh

# TEST_WORKERS=N runs the tests in N pytest-xdist processes: most integration tests wait on I/O
# (subprocesses, the broker, HTTP), so even two cores gain. `--dist loadgroup` keeps the tests of
# one xdist_group on one worker. TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2

test: deps tools  ## the suite without the slow scenarios, with a real Kafka broker (what CI runs)
	PYTHON=$(PYTHON) $(PYTHON) -m pytest -p no:cacheprovider -n $(TEST_WORKERS) --dist loadgroup

test-long: deps tools  ## everything, the slow fault, soak and large-scale scenarios too
	PYTHON=$(PYTHON) $(PYTHON) -m pytest -p no:cacheprovider -m ""

test-fast: deps  ## unit tests only (no network, no broker)
	$(PYTHON) -m pytest -p no:cacheprovider tests/unit

lint: deps
	$(PYTHON) -m ruff check notifier tests examples
	$(PYTHON) -m mypy notifier

# requirements.lock pins the runtime dependencies (no [dev]) with hashes for the image build.
# pip-compile (pip-tools) because its output is a plain requirements file that the image's own
# pip installs with --require-hashes: no extra tool in the image or in CI.
lock: deps  ## regenerate requirements.lock from pyproject.toml
	$(VENV)/bin/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe \
	  --no-emit-index-url --no-emit-find-links --output-file=requirements.lock pyproject.toml

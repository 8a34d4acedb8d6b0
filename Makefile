# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
export NOTIFIER_CACHE ?= $(HOME)/.cache/notifier
export PATH := $(NOTIFIER_CACHE)/bin:$(PATH)

.PHONY: deps tools demo test test-fast lint bench

deps:  ## install the package and its test dependencies (idempotent)
	@$(PYTHON) -m pip install -q --disable-pip-version-check -e '.[dev]'

tools:  ## promtool, kcat, helm, kubeconform (idempotent; needs root for apt)
	@bash scripts/install-tools.sh

demo: deps  ## the main job on the embedded default: simulator + SQLite + stdout
	@bash scripts/demo.sh

test: deps tools  ## the whole suite, with a real Kafka broker started by the tests
	$(PYTHON) -m pytest -p no:cacheprovider

test-fast: deps  ## unit tests only (no network, no broker)
	$(PYTHON) -m pytest -p no:cacheprovider tests/unit

lint:
	ruff check notifier tests
	mypy notifier

# kube-event-bridge: `make demo` shows it working, `make test` proves it.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# pytest-xdist workers for `make test`; each one past the first starts a test world of its own
TEST_WORKERS ?= 2
# The part of the integration suite `make test` also runs with every server in a container
# (BRIDGE_TEST_BACKEND=testcontainers, ~45 s warm); `make test-containers` runs all of it
# that way, broker outages included (left out here to keep `make test` near 10 minutes).
CONTAINER_TESTS ?= tests/integration/test_world_smoke.py \
	tests/integration/test_sink_conformance.py \
	tests/integration/test_end_to_end.py::test_sigterm_restart_loses_and_repeats_nothing \
	-k "not outage"

.PHONY: help deps venv lint world-up world-down test test-containers unit demo bench chaos clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

deps: ## install missing system packages (Java 17, Maven, Docker, debootstrap; Go >= 1.21)
	@bash .ci/system-deps.sh

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

venv: $(VENV)/.installed ## the Python virtualenv with runtime and test dependencies

lint: venv ## ruff, mypy and the layering contracts (import-linter, in pyproject.toml)
	$(PY) -m ruff check bridge sinks kube_event_consumer tests bench
	$(PY) -m mypy
	$(VENV)/bin/lint-imports --no-cache

world-up: deps venv ## build (first time) and start kube-apiserver+etcd, Kafka, NATS on loopback
	$(PY) -m tests.env up

world-down: ## stop the test world and delete its data
	$(PY) -m tests.env down

SINK ?= jsonl
demo: deps venv ## the bridge live: local control plane, sample CRDs, CloudEvents (SINK=jsonl|kafka|nats)
	$(PY) -m tests.demo --sink $(SINK)

bench: deps venv ## benchmarks in a separate test world (not part of `make test`)
	KEB_WORLD_DIR=$${TMPDIR:-/tmp}/keb-world-bench-$$(id -u) $(PY) -m bench $(BENCH_ARGS); rc=$$?; \
	KEB_WORLD_DIR=$${TMPDIR:-/tmp}/keb-world-bench-$$(id -u) $(PY) -m tests.env down; exit $$rc

chaos: deps venv ## the full chaos suite (thousands of changes, 20-30 kills, 60 s outages, exactly-once)
	$(PY) -m tests.env up >/dev/null
	@set +e; CHAOS=full $(PY) -m pytest tests/integration/test_chaos.py \
	  tests/integration/test_exactly_once.py -s -p no:cacheprovider; \
	rc=$$?; $(PY) -m tests.env down; exit $$rc

unit: venv ## unit tests only (no servers)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test: deps venv lint ## everything: lint, real servers, unit + integration tests (a part also in containers)
	$(PY) -m tests.env up >/dev/null
	@set +e; $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS); rc=$$?; \
	$(PY) -m tests.env down; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; \
	BRIDGE_TEST_BACKEND=testcontainers $(PY) -m pytest $(CONTAINER_TESTS); crc=$$?; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi; exit $$crc

# test_world_lifecycle is about `python -m tests.env` (the local world's own CLI): not run here.
test-containers: deps venv ## the integration suite, every server in a locally built container
	BRIDGE_TEST_BACKEND=testcontainers $(PY) -m pytest tests/integration \
	  --deselect tests/integration/test_world_lifecycle.py $(PYTEST_ARGS)

clean: ## remove the venv and caches in the repo (build caches in ~/.cache stay)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# fleetlog tasks. `make` alone lists them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
BENCH_STAMP := $(VENV)/.bench-installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
# `make bench BENCH_ARGS=--quick` for the ~3-minute smoke run.
BENCH_ARGS ?=
# The test broker gets its own ports and folder so it never meets a developer's broker.
TEST_KAFKA_DIR  := .fleetlog/test-kafka
TEST_KAFKA_PORT ?= 19092

.DEFAULT_GOAL := help
.PHONY: help install browser slurm alertmanager demo test lint unit quick kafka-up kafka-down bench clean

help: ## list the tasks
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## create .venv and install fleetlog with its dev tools

browser: ## install Debian's chromium for the report's browser test (root only)
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's chromium for the browser test..."; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; \
	  else echo "note: install chromium (apt-get install chromium) to run the browser test"; fi; }

# The act tests start a real single-host Slurm of their own (tests/act/slurm_cluster.py).
SLURM_PACKAGES := slurmctld slurmd slurm-client munge
slurm: ## install Debian's Slurm and munge for the act tests (root only)
	@command -v slurmctld >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 && \
	  command -v scontrol >/dev/null 2>&1 && command -v munged >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's $(SLURM_PACKAGES) for the act tests..."; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SLURM_PACKAGES) >/dev/null 2>&1 || \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SLURM_PACKAGES) >/dev/null; }; \
	  else echo "note: install $(SLURM_PACKAGES) (apt-get install ...) to run the act tests"; fi; }

alertmanager: ## install Debian's prometheus-alertmanager for the alert tests (root only)
	@command -v prometheus-alertmanager >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's prometheus-alertmanager for the alert tests..."; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-alertmanager >/dev/null 2>&1 || \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-alertmanager >/dev/null; }; \
	  else echo "note: install prometheus-alertmanager (apt-get install prometheus-alertmanager) to run the alert tests"; fi; }

demo: $(STAMP) ## set up, then run the whole pipeline once (`fleetlog demo`)
	$(BIN)/fleetlog demo

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/mypy

unit: $(STAMP) ## the tests without Kafka
	$(BIN)/pytest -m 'not kafka'

quick: $(STAMP) ## the tests that take under a few seconds each, without Kafka (~2 min)
	$(BIN)/pytest -m 'not kafka and not slow'

test: $(STAMP) browser slurm alertmanager ## set up, lint, start a local Kafka broker, run every test, stop the broker
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/fleetlog kafka up --data-dir $(TEST_KAFKA_DIR) --port $(TEST_KAFKA_PORT) --json
	FLEETLOG_KAFKA_BOOTSTRAP=127.0.0.1:$(TEST_KAFKA_PORT) $(BIN)/pytest; \
	  status=$$?; $(BIN)/fleetlog kafka down --data-dir $(TEST_KAFKA_DIR) --json; exit $$status

$(BENCH_STAMP): $(STAMP)
	@$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@rm -f $(VENV)/.bench-installed-* && touch $@

bench: $(BENCH_STAMP) ## every benchmark on a private local broker -> BENCHMARKS.md (~30 min; BENCH_ARGS=--quick: ~3)
	$(BIN)/python bench/suite.py $(BENCH_ARGS)

kafka-up: $(STAMP) ## start the local broker on 127.0.0.1:9092
	$(BIN)/fleetlog kafka up

kafka-down: $(STAMP) ## stop the local broker
	$(BIN)/fleetlog kafka down

clean: ## remove the virtualenv and local data (.fleetlog)
	rm -rf $(VENV) .fleetlog .mypy_cache .ruff_cache .pytest_cache

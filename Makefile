# A2Z SOC — the two commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000

.PHONY: install demo test lint typecheck unit clean lock fuzz bench-agent bench-api bench-api-floor bench-channel \
	bench-rules bench-ingest eval-detection

install: $(STAMP)

# The agent modules mypyc compiles in place (pyproject.toml, hooks.mypyc include): editing one
# re-runs the build, so a stale extension never shadows its edited source.
MYPYC_SOURCES := $(shell sed -n '/hooks\.mypyc\]/,/^\]/s/^ *"\(src\/.*\.py\)",*$$/\1/p' pyproject.toml)

# Re-install only when the project, its pins or a compiled source change; idempotent.
$(STAMP): pyproject.toml constraints.txt $(MYPYC_SOURCES)
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "A2Z SOC needs Python 3.11+"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: install
	$(BIN)/a2z demo --port $(PORT)

lint: install
	$(BIN)/ruff check src tests $(wildcard bench) $(wildcard fuzz)
	$(BIN)/ruff format --check src tests $(wildcard bench) $(wildcard fuzz)
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest

test: lint typecheck unit

# Fuzz every decoder target in fuzz/ for FUZZ_SECONDS each (atheris, from the dev extra). The
# seed corpus comes from tests/data; what libFuzzer learns is kept in .fuzz/corpus between runs
# and any crashing input lands in .fuzz/crashes/ (the run then stops with an error).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= $(patsubst fuzz/fuzz_%.py,%,$(wildcard fuzz/fuzz_*.py))
fuzz: install
	@mkdir -p .fuzz/crashes
	@for t in $(FUZZ_TARGETS); do \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
	  mkdir -p .fuzz/corpus/$$t && \
	  $(BIN)/python fuzz/fuzz_$$t.py --write-seeds .fuzz/seeds/$$t && \
	  $(BIN)/python fuzz/fuzz_$$t.py .fuzz/corpus/$$t .fuzz/seeds/$$t \
	    -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=.fuzz/crashes/$$t- \
	    -print_final_stats=1 > .fuzz/$$t.log 2>&1 \
	    || { tail -n 60 .fuzz/$$t.log; echo "fuzz: $$t FAILED (log .fuzz/$$t.log)"; exit 1; }; \
	  grep -E '^(Done|stat::(number_of_executed_units|average_exec_per_sec|new_units))' .fuzz/$$t.log; \
	done

# Agent throughput: the pipeline against tshark on the same captures, then (as root) live
# capture cost on a veth pair. Figures and how to read them: docs/benchmarks.md.
bench-agent: install
	$(BIN)/python bench/bench_replay.py --repeat 2
	@if [ "$$(id -u)" = 0 ]; then $(BIN)/python bench/bench_capture.py; \
	else echo "bench-agent: the live-capture part needs root (sudo make bench-agent)"; fi

# API latency and throughput: the real server on SQLite and PostgreSQL, reads and writes at 50
# and 200 clients; h2load (raw per-request latencies) and wrk as the reference clients
# (apt-get install nghttp2-client wrk; each skipped if absent). A few minutes; see
# docs/benchmarks.md. BENCH_API_ARGS passes options (e.g. --duration 5).
bench-api: install
	$(BIN)/python bench/bench_api.py $(BENCH_API_ARGS)

# The floor under the API's read target: the events page as a bare ASGI app (no framework, no
# ORM) under wrk at 200 connections, on SQLite and PostgreSQL (docs/benchmarks.md, API).
bench-api-floor: install
	$(BIN)/python bench/bench_api_floor.py $(BENCH_API_FLOOR_ARGS)

# Agent channel: records/s through one agent connection (spool + mTLS) into the real server on
# SQLite, against an ack-only sink, and JSON lines over a plain WebSocket as the reference; bytes
# per record on the wire. About a minute; see docs/benchmarks.md. BENCH_CHANNEL_ARGS passes
# options (e.g. --records 100000).
bench-channel: install
	$(BIN)/python bench/bench_channel.py $(BENCH_CHANNEL_ARGS)

# Event-store writes: rows/s of store_batch on PostgreSQL (the array insert), the raw COPY
# ceiling, and SQLite; the store half's CPU per 1,000 events (ingest process and its
# PostgreSQL backend, 1 and 16 batches per transaction; BENCH_INGEST_STORE_ARGS, e.g.
# --indexes); tenant isolation under a 10x flood with the roles split, ingest and gateway at
# niceness 10 as docs/operating.md advises (BENCH_CONTENTION_ARGS; without --bus: one
# process); then end to end (JetStream -> ingest processes -> PostgreSQL,
# the embedded default) with latencies, and search over 10M events. Needs PostgreSQL
# (A2Z_BENCH_PG); about 25 minutes; see docs/benchmarks.md. BENCH_INGEST_ARGS and
# BENCH_PIPELINE_ARGS pass options (e.g. --batches 100, --search-rows 1000000).
BENCH_INGEST_STORE_ARGS ?= --group 1 16
BENCH_CONTENTION_ARGS ?= --bus
bench-ingest: install
	$(BIN)/python bench/bench_ingest.py $(BENCH_INGEST_ARGS)
	$(BIN)/python bench/bench_ingest_store.py $(BENCH_INGEST_STORE_ARGS)
	$(BIN)/python bench/bench_contention.py $(BENCH_CONTENTION_ARGS)
	$(BIN)/python bench/bench_pipeline.py $(BENCH_PIPELINE_ARGS)

# Sigma rule matching: records/s with 10, 100 and 1,000 rules (SigmaHQ network/web rules plus
# variants) over the demo capture, indexed and prefiltered against every-rule-on-every-record;
# then the built-in detections' records/s (together and each alone), Sigma correlation
# throughput (6 to 300 correlations) and threat-intel matching with 1,000,000 indicators (load
# time, RSS, lookups/s, delta sizes to agents) and the detect role's refresh cost for a stored
# set of 1,000,000 after a 1% change. Several minutes; see docs/benchmarks.md.
# BENCH_RULES_ARGS passes options to the first (e.g. --seconds 5).
bench-rules: install
	$(BIN)/python bench/bench_rules.py $(BENCH_RULES_ARGS)
	$(BIN)/python bench/bench_correlation.py
	$(BIN)/python bench/bench_intel.py
	$(BIN)/python bench/bench_intel_refresh.py

# Precision and recall of each built-in detection over labelled captures: the demo capture,
# the real-tool captures of bench/data/detect/ and the benign captures of tests/data/. A few
# seconds; see docs/detections.md and docs/benchmarks.md.
eval-detection: install
	$(BIN)/python bench/eval_detection.py

# Refresh the pins after changing dependencies in pyproject.toml.
lock: install
	$(BIN)/python -m pip list --format=freeze --exclude-editable | grep -v '^a2z-soc' > constraints.txt

clean:
	rm -rf $(VENV) a2z-data .pytest_cache .mypy_cache .ruff_cache
	find src -name "*.so" -delete

# `make run` and `make test` do all the set-up a fresh machine needs.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEBS := xenstore-utils xen-utils-4.17 libxen-dev gcc make
RUN_DIR := $(CURDIR)/run

.PHONY: run test lint bench bench-persist fuzz drill debs venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# The integration tests drive Debian's real xenstore clients.
debs:
	@if ! dpkg -s $(DEBS) >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBS); \
	fi

run: $(STAMP)
	$(VPY) -m pyxenstored --no-fork --socket $(RUN_DIR)/socket --state-dir $(RUN_DIR)/state --verbose

test: $(STAMP) debs lint
	$(VPY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check pyxenstored tests bench fuzz drills
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(VPY) -m bench

# Issue 5: recovery time of a 120,000-node store, and pipelined write
# throughput with durability none/write/fsync (bench/persist.py; ~2 min).
bench-persist: $(STAMP)
	$(VPY) -m bench persist

# Long campaigns: OPS differential operations against C xenstored under the
# stand-in, then FUZZ_SECONDS of live fuzzing of pyxenstored (python -m fuzz --help).
OPS ?= 100000
FUZZ_SECONDS ?= 300
fuzz: $(STAMP) debs
	$(VPY) -m fuzz diff --ops $(OPS) --against c
	$(VPY) -m fuzz live --seconds $(FUZZ_SECONDS)

# The crash drill (issue 5): CYCLES SIGKILLs of pyxenstored under load from
# socket clients and guests on rings, each restart checked for lost writes,
# half-applied transactions and missed watch events (python -m drills --help).
CYCLES ?= 200
drill: $(STAMP) debs
	$(VPY) -m drills crash --cycles $(CYCLES)

clean:
	rm -rf $(VENV) $(RUN_DIR)

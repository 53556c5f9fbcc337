# `make run` and `make test` do all the set-up a fresh machine needs.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEBS := xenstore-utils xen-utils-4.17 libxen-dev gcc make
RUN_DIR := $(CURDIR)/run

.PHONY: run test lint bench bench-persist bench-lu fuzz drill drill-lu debs venv clean

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

bench: $(STAMP) debs
	$(VPY) -m bench

# Issue 5: recovery time of a 120,000-node store, and pipelined write
# throughput with durability none/write/fsync (bench/persist.py; ~2 min).
bench-persist: $(STAMP)
	$(VPY) -m bench persist

# Issue 6: the service pause of one live update at 1,000, 10,000 and 120,000
# nodes, pyxenstored beside C xenstored, on the stand-in (bench/liveupdate.py).
bench-lu: $(STAMP) debs
	$(VPY) -m bench live-update

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

# The live-update drill (issue 6): CYCLES live updates through xenstore-control
# under load from CLIENTS socket clients and guests on rings, checking every
# reply, watch event and transaction, and measuring the pause of each update.
drill-lu: CYCLES = 100
CLIENTS ?= 20
drill-lu: $(STAMP) debs
	$(VPY) -m drills live-update --cycles $(CYCLES) --clients $(CLIENTS)

clean:
	rm -rf $(VENV) $(RUN_DIR)

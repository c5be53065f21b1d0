# Two commands do all set-up on a fresh Debian machine (as root): `make demo` and `make test`.
# The interpreter: Debian's own python3.11 where there is one. It is built with profile-guided
# optimisation and link-time optimisation, with libpython linked into the binary, and runs
# the request path 8-25% faster than a plain build from source (docs/performance.md).
DEB_PY  := /usr/bin/python3.11
PY      ?= $(shell [ -x $(DEB_PY) ] && echo $(DEB_PY) || echo python3)
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
APT     := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends
# Debian packages the tests drive as real peers.
TEST_DEBS  := curl openssl
# Debian packages the benchmarks run side by side.
BENCH_DEBS := nginx-light haproxy wrk util-linux procps valgrind

.PHONY: demo test bench bench-push install py-debs test-debs bench-debs clean

$(STAMP): pyproject.toml
	@if [ "$(PY)" = "$(DEB_PY)" ]; then $(MAKE) --no-print-directory py-debs; fi
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

# Installs a Debian package only when its command is missing; apt-get update runs once.
define need_debs
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && $(APT) $$missing >/dev/null || { echo "could not install:$$missing" >&2; exit 1; }; \
	fi
endef

# Debian's interpreter makes virtual environments only with its venv package.
py-debs:
	$(call need_debs,python3.11-venv)

test-debs:
	$(call need_debs,$(TEST_DEBS))

bench-debs:
	$(call need_debs,$(BENCH_DEBS))

demo: $(STAMP)
	$(BIN)/python -m plait.demo

test: $(STAMP) test-debs
	$(BIN)/python -m pytest -q tests

bench: $(STAMP) bench-debs
	$(BIN)/python bench/http1.py
	$(BIN)/python bench/routes.py
	$(BIN)/python bench/governance.py
	$(BIN)/python bench/mtls.py
	$(BIN)/python bench/instructions.py

# xDS push latency to 1,000 simulated proxies (about a minute; no Debian packages needed).
bench-push: $(STAMP)
	$(BIN)/python bench/push.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info

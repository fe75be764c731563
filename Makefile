# Two entry points (README.md): `make run` and `make test` build .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test venv bench clean system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m coordinator.demo

# The multi-host tests need sshd (for mpirun between namespaces) and the dashboard test needs
# Chromium; install them where we may. Without them (not root, no apt) those tests skip and say why.
system-deps:
	@if ! command -v sshd >/dev/null 2>&1 && [ ! -x /usr/sbin/sshd ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing openssh-server for the multi-host tests"; \
		(apt-get install -y -qq openssh-server >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq openssh-server >/dev/null 2>&1)) || echo "could not install openssh-server; mpi multi-host tests will skip"; \
	fi
	@if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium for the dashboard test"; \
		(DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1)) || echo "could not install chromium; the dashboard browser test will skip"; \
	fi

# The layers first (shared/ imports neither side, the sides never each other: [tool.importlinter]
# in pyproject.toml), then the tests.
test: $(STAMP) system-deps
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

# Every benchmark, then a dated results block in docs/benchmarks.md; BENCH_ARGS=--quick for short settings.
bench: $(STAMP)
	$(PY) bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info

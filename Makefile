# Two entry points (README.md): `make run` and `make test` build .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test venv venv-cuda bench clean system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# NVIDIA nodes only: MLX's CUDA build (the `cuda` extra) in place of the CPU one. mlx-cpu and
# mlx-cuda-12 ship the same files (mlx/lib/libmlx.so...) and pip deletes all of a wheel's files on
# uninstall, even those another wheel wrote last. So: install the extra (the mlx[cpu] dependency
# comes along), remove mlx-cpu, then write mlx-cuda-12's files again. It works from any state; run
# it again after a `make venv` that reinstalled (a changed pyproject.toml brings mlx-cpu back).
venv-cuda: $(STAMP)
	@command -v nvidia-smi >/dev/null 2>&1 || { echo "venv-cuda: no nvidia-smi here; MLX's CUDA build needs an NVIDIA GPU and driver" >&2; exit 1; }
	$(PY) -m pip install --quiet -e '.[cuda]'
	$(PY) -m pip uninstall --quiet -y mlx-cpu
	$(PY) -m pip install --quiet --force-reinstall --no-deps \
		"mlx-cuda-12==$$($(PY) -c 'from importlib.metadata import version; print(version("mlx"))')"
	$(PY) -c 'import mlx.core as mx; print("MLX", mx.__version__, "CUDA:", mx.cuda.is_available())'

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

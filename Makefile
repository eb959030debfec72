# tflite-edge: `make demo` runs the main job, `make test` runs the tests.
# Both create what they need and reuse it when run again.

PYTHON ?= python3.11
VENV := .venv
VENV_DEVICE := .venv-device
HOST_PY := $(VENV)/bin/python
DEVICE_PY := $(VENV_DEVICE)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: all setup demo monitor test test-fast test-arm64 arm64-userland bench lint docs clean mosquitto prometheus

all: setup

setup: $(VENV)/.installed $(VENV_DEVICE)/.installed mosquitto prometheus

$(VENV)/.installed: requirements/host.txt setup.cfg setup.py pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 (Debian: apt-get install python3.11 python3.11-venv)"; exit 1; }
	@[ -x $(HOST_PY) ] || $(PYTHON) -m venv $(VENV)
	$(HOST_PY) -m pip install -q --upgrade "pip>=23" wheel "setuptools>=68"
	$(HOST_PY) -m pip install -q -r requirements/host.txt
	$(HOST_PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

$(VENV_DEVICE)/.installed: requirements/device.txt setup.cfg setup.py pyproject.toml
	@[ -x $(DEVICE_PY) ] || $(PYTHON) -m venv $(VENV_DEVICE)
	$(DEVICE_PY) -m pip install -q --upgrade "pip>=23" wheel "setuptools>=68"
	$(DEVICE_PY) -m pip install -q -r requirements/device.txt
	$(DEVICE_PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

mosquitto:
	@command -v mosquitto >/dev/null && command -v mosquitto_sub >/dev/null || { \
	  echo "installing Mosquitto from the Debian package"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq mosquitto mosquitto-clients >/dev/null; }
	@# The Debian package enables a system broker on port 1883; tflite-edge starts its own.

prometheus:
	@command -v prometheus >/dev/null || { \
	  echo "installing Prometheus from the Debian package"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
	@# On systemd hosts the package also runs a system Prometheus on port 9090; tflite-edge monitor
	@# (port 9091) and the tests start their own on loopback.

test: setup arm64-userland
	$(HOST_PY) -m pytest -q

# The arm64 tier (tests/arm64): a Debian arm64 userland under QEMU, built once into
# /var/cache/tflite-edge and rebuilt when its recipe changes. Needs root; elsewhere it
# prints one line saying why it is skipped.
arm64-userland:
	@$(HOST_PY) tests/arm64/userland.py prepare

test-arm64: setup arm64-userland
	$(HOST_PY) -m pytest -q tests/arm64

test-fast: setup
	$(HOST_PY) -m pytest -q -m "not slow"

demo: setup
	$(HOST_PY) -m tflite_edge demo --out out/demo

monitor: setup
	$(HOST_PY) -m tflite_edge monitor out/demo

bench: setup
	$(HOST_PY) -m bench --out out/bench

lint: setup
	$(VENV)/bin/ruff check tflite_edge tests bench
	$(VENV)/bin/mypy tflite_edge

clean:
	rm -rf out build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache

# SiteGW: `make demo` runs a live simulated site end to end; `make test` runs the suite on real services.
# Both install what they need: Debian packages (as root, or through sudo) and a venv in .venv.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PKGS := mosquitto mosquitto-clients influxdb victoria-metrics socat mbpoll openssl python3-venv chromium fonts-wqy-microhei \
	nats-server postgresql
APT_BINS := mosquitto mosquitto_sub influxd victoria-metrics socat mbpoll openssl chromium nats-server pg_ctlcluster
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo demo-region test test-slow soak bench deps venv lint typecheck check clean

demo: deps venv
	$(PY) -m services.demo

# three simulated sites and the regional hub (NATS ×3, PostgreSQL, two hub replicas); prints the hub's URL
demo-region: deps venv
	$(PY) -m services.demo_region

test: deps venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q -p no:cacheprovider

# the scenario tests of minutes that `make test` leaves out (pytest marker `slow`: the two-minute soak)
test-slow: deps venv
	$(PY) -m pytest -q -p no:cacheprovider -m slow

soak: deps venv
	$(PY) -m soak --minutes 30

bench: deps venv
	$(PY) -m bench
	$(PY) -m bench.modbus_poll --short
	$(PY) -m bench.peer_thingsboard --short
	$(PY) -m bench.mqtt_sweep --short
	$(PY) -m bench.modbus_sweep --short
	$(PY) -m bench.hub --short

deps:
	@missing=""; for b in $(APT_BINS); do PATH="$$PATH:/usr/sbin" command -v $$b >/dev/null || missing="$$missing $$b"; done; \
	python3 -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages (missing:$$missing)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PKGS) >/dev/null; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	URLLIB3_NO_OVERRIDE=true $(PY) -m pip install -q --no-binary urllib3-future -e '.[dev]'
	touch $@

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check . || true

typecheck: venv
	$(VENV)/bin/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) .run

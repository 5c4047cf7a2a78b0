# `make demo` and `make test` set everything up themselves on a fresh Debian machine.
SHELL  := /bin/bash
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test venv system-deps test-deps services typecheck bench docs clean

# Debian packages: Graphviz for pipeline.show() (draw extra); for the test suite also Chromium (the
# HTTP docs page), GStreamer's RTSP server and ffmpeg (a real camera), PostgreSQL and Mosquitto.
# Only what is missing is installed.
DEBS_RUN  := graphviz libgraphviz-dev
DEBS_TEST := chromium ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base \
             gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav \
             postgresql mosquitto
# The GPU example and its smoke test need torch; pinned so pip takes the CPU build on this machine's disk
# instead of downloading a multi-GB CUDA build (on a GPU machine, install the CUDA build you need).
TORCH ?= 2.13.0
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

define install_debs
	@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

system-deps:
	$(call install_debs,$(DEBS_RUN))

test-deps: system-deps
	$(call install_debs,$(DEBS_TEST))

# PostgreSQL (127.0.0.1:5432, trust auth, database "test") and Mosquitto (127.0.0.1:1883) for the
# database and MQTT tests; started only when nothing answers on their ports.
services: test-deps venv
	@if ! pg_isready -q -h 127.0.0.1 -p 5432; then \
		echo "starting PostgreSQL"; \
		$(SUDO) pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -n1) main start; \
	fi
	@if ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then \
		echo "starting Mosquitto"; $(SUDO) mosquitto -d -c /etc/mosquitto/mosquitto.conf; \
	fi
	@$(PY) tests/services.py

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,docs,test]'
	$(PY) -m pip install -q 'torch==$(TORCH)'
	rm -f $(VENV)/.installed-*; touch $(STAMP)

venv: system-deps $(STAMP)

demo: venv
	$(call install_debs,ffmpeg)
	$(PY) examples/demo.py $(DEMO_ARGS)

test: venv services
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory typecheck

typecheck: venv
	$(PY) -m mypy rvai_sdk extensions

docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: venv
	$(PY) benchmarks/bench_executor.py --write docs/performance.md
	$(PY) benchmarks/bench_transport.py --write docs/performance.md
	$(PY) benchmarks/bench_batching.py --write docs/performance.md
	$(PY) benchmarks/bench_stream.py --write docs/performance.md
	$(PY) benchmarks/bench_http.py
	$(PY) benchmarks/bench_ray.py --write docs/performance.md
	@if $(PY) -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null; \
	then $(PY) benchmarks/bench_gpu.py --write docs/performance.md; \
	else echo "bench_gpu.py skipped: needs torch with a CUDA GPU (--cpu-smoke checks the script)"; fi

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache

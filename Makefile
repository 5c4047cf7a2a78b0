# `make demo` and `make test` set everything up themselves on a fresh Debian machine.
SHELL  := /bin/bash
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)
# `make demo` has a lean virtualenv of its own: the package with only the demo extra (no torch, ray,
# docs or test tools), so it sets up in seconds; `make test` keeps installing everything in $(VENV).
DEMO_VENV  ?= .venv-demo
DEMO_PY    := $(DEMO_VENV)/bin/python
DEMO_STAMP := $(DEMO_VENV)/.installed-$(shell cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo demo-venv test venv system-deps test-deps services typecheck bench gpu-check docs clean

# Debian packages: Graphviz for pipeline.show() (draw extra); for the test suite also Chromium (the
# HTTP docs page), GStreamer's RTSP server and ffmpeg (a real camera), PostgreSQL and Mosquitto.
# Only what is missing is installed.
DEBS_RUN  := graphviz libgraphviz-dev
DEBS_TEST := chromium ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base \
             gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav \
             postgresql mosquitto
# The GPU example and its smoke test need torch. Where $(PYTHON) already has a CUDA build of torch (a GPU
# machine), the virtualenv is made over its packages and uses that torch: nothing is downloaded, nothing
# pinned. Elsewhere torch $(TORCH) is installed (pip takes the CPU build on this machine's disk).
TORCH ?= 2.13.0
HAS_CUDA_TORCH := $(shell $(PYTHON) -c "import torch, sys; sys.exit(not torch.version.cuda)" >/dev/null 2>&1 && echo 1)
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

# The editable install: rvai_sdk/extensions links to extensions/, so `pip install -e` writes a plain .pth (the
# project root) that mypy and IDEs read too; tests/packaging/test_typed_project.py checks a user's mypy --strict.
$(STAMP):
ifeq ($(HAS_CUDA_TORCH),1)
	@echo "using $(PYTHON)'s CUDA build of torch (no torch download, no pin)"
	$(PYTHON) -m venv --system-site-packages $(VENV)
else
	$(PYTHON) -m venv $(VENV)
endif
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,docs,test]'
ifneq ($(HAS_CUDA_TORCH),1)
	$(PY) -m pip install -q 'torch==$(TORCH)'
endif
	@GPU_PYTHON=$(PY) bash benchmarks/gpu_check.sh --torch-only
	rm -f $(VENV)/.installed-*; touch $(STAMP)

venv: system-deps $(STAMP)

# pip prints each package as it is collected and installed (the progress of the one slow step);
# --no-compile skips byte-compiling every installed module: Python compiles what the demo imports as it runs.
$(DEMO_STAMP):
	@echo "setting up $(DEMO_VENV): rvai_sdk with the demo extra only (fastapi, uvicorn, httpx, av, sqlalchemy)"
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_PY) -m pip install --no-compile --progress-bar on -e '.[demo]'
	rm -f $(DEMO_VENV)/.installed-*; touch $(DEMO_STAMP)

demo-venv: $(DEMO_STAMP)

demo: demo-venv
	$(call install_debs,ffmpeg)
	$(DEMO_PY) examples/demo.py $(DEMO_ARGS)

# The suite runs on $(TEST_WORKERS) pytest-xdist workers: most of its time is spent waiting on real processes,
# servers and Ray, so two workers keep both CPU cores of a CI machine busy. Every test owns what it touches
# (its ports, tables, Redis keys, MQTT topics, Ray instance per worker, and a PostgreSQL server of its own
# where it stops one), so tests may run side by side. TEST_WORKERS=0 runs them in this process, one by one.
TEST_WORKERS ?= 2
test: venv services
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal
	$(MAKE) --no-print-directory typecheck

typecheck: venv
	$(PY) -m mypy rvai_sdk   # rvai_sdk/extensions links to extensions/: one pass checks both

docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: venv
	$(PY) benchmarks/bench_executor.py --write docs/performance.md
	$(PY) benchmarks/bench_transport.py --write docs/performance.md
	$(PY) benchmarks/bench_batching.py --write docs/performance.md
	$(PY) benchmarks/bench_stream.py --write docs/performance.md
	$(PY) benchmarks/bench_http.py
	$(PY) benchmarks/bench_ray.py --write docs/performance.md
	$(PY) benchmarks/bench_rescale.py --write docs/performance.md
	$(PY) benchmarks/bench_streams.py --write docs/performance.md
	$(PY) benchmarks/bench_state_store.py --write docs/performance.md
	$(PY) benchmarks/bench_model_swap.py --write docs/performance.md
	$(PY) benchmarks/bench_stream_positions.py --write docs/performance.md
	$(PY) benchmarks/bench_tasks.py --write
	$(PY) benchmarks/bench_oip.py --write docs/performance.md
	$(PY) benchmarks/bench_async.py
	$(PY) benchmarks/bench_logging.py
	$(PY) benchmarks/bench_tracing.py
	@if [ -n "$$(ls /dev/nvidia[0-9]* 2>/dev/null)" ]; then $(PY) benchmarks/bench_gpu.py --write docs/performance.md; \
	else echo "bench_gpu.py not run: no NVIDIA GPU here (make gpu-check on a GPU machine; --cpu-smoke checks the script)"; fi

# On a machine with an NVIDIA GPU and a CUDA build of torch (GPU_PYTHON, python3 by default): GPU-marked
# tests, the page-locking probe, the example at full size and bench_gpu.py, whose figures and the GPU's
# name replace the bench:gpu section of docs/performance.md, then the GPU decode check and bench_cameras.py
# (bench:cameras); about 5.5 minutes on an H200 (measured), nothing downloaded.
# Fails loudly when a GPU is listed but that torch cannot use it. See docs/guides/gpu_batching.md.
gpu-check:
	bash benchmarks/gpu_check.sh

clean:
	rm -rf $(VENV) $(DEMO_VENV) build dist *.egg-info .pytest_cache .mypy_cache

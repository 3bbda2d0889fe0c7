# `make test` is what CI runs (.ci/run) and what a newcomer runs first.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned and installed first: the CPU build of 2.13.0 lies on this machine's disk, and an
# unpinned torch would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: venv test lint demo bench

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)

$(VENV)/.installed: $(PY) pyproject.toml
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks

test: venv
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

# 16 frames along a keyframed camera loop (right, down, left, up: two latent pixels each way) that keeps this
# seed's circle in view; the same frames as an MP4 with an enlarged contact sheet, and as a GIF.
DEMO := $(VENV)/bin/t2vzero generate "a red circle on a blue background" --frames 16 --fps 8 --seed 41 \
	--motion-file examples/camera_loop.json

demo: venv
	$(DEMO) -o demo.mp4 --sheet
	$(DEMO) -o demo.gif

bench: venv
	$(PY) benchmarks/compare_diffusers.py

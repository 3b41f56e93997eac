# Every target creates the virtualenv it needs; a fresh clone needs only python3.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test venv clean compile browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps rapidocr-onnxruntime==1.4.4
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/lowprec demo

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

# Headless Chromium for the HTML report test: Debian's package, installed once.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the HTML report test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

compile: $(STAMP)
	$(BIN)/lowprec pipeline compile --out pipelines/ptq.yaml

clean:
	rm -rf $(VENV) build *.egg-info

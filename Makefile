# Every target creates the virtualenv it needs; a fresh clone needs only python3.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test venv clean compile

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps rapidocr-onnxruntime==1.4.4
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/lowprec demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

compile: $(STAMP)
	$(BIN)/lowprec pipeline compile --out pipelines/ptq.yaml

clean:
	rm -rf $(VENV) build *.egg-info

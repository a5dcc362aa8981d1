# The two commands of the README. Each creates .venv on first use and installs requirements.txt.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install book test test-slow test-all pdf notebooks smoke serve clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

## make book: build the static HTML site into _build/html (warnings are errors)
book: $(STAMP)
	$(BIN)/jupyter-book build . -W -n --keep-going

## make test: unit tests, book checks (pairing, outputs, toc, build, launch links) and pytest --nbval,
## then every chapter again as if on another machine (two threads, parameters perturbed by a few
## ulps): compared outputs must hold without re-storing them. Two workers, one notebook each.
WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadfile
	TC_THREADS=2 TC_PERTURB=$${TC_PERTURB:-1} $(BIN)/python -m pytest -n $(WORKERS) --dist loadfile chapters

## make test-slow: the slow tier (tests marked `slow`): the Colab-like launch in a fresh virtual
## environment, the dependency lower bounds, the full-mode smoke run of every chapter and the PDF.
## CI (.ci/run) runs it after `make test`; `make test-all` runs both.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadfile -m slow tests

test-all: test test-slow

## make pdf: the whole book as one PDF (and a zip of every notebook) under _build/html/downloads/
pdf: $(STAMP)
	$(BIN)/python scripts/pdf.py

## make smoke: every chapter in full mode with its steps and samples capped (TC_SMOKE=1), CPU
smoke: $(STAMP)
	$(BIN)/python scripts/smoke.py --all

## make notebooks: re-execute every chapter and store its outputs (after editing a .md)
notebooks: $(STAMP)
	$(BIN)/python scripts/execute.py --all

## make serve: preview the built site at http://localhost:8000
serve:
	$(PYTHON) -m http.server --directory _build/html 8000

clean:
	rm -rf _build

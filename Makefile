# Two entry points (see README): `make demo` runs the quickstart (which serves its own llama.cpp model),
# `make test` runs every test. Both set everything up from a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8080
STAMP  := $(VENV)/.installed

.PHONY: demo test lab install browser model server stop bench dist clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Debian's chromium for the browser tests (never a downloaded browser).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

model: $(STAMP)
	$(BIN)/python scripts/make_tiny_gguf.py .cache/models/tiny-llama.gguf

server: $(STAMP)
	$(BIN)/python scripts/llama_server.py start --port $(PORT) --alias tiny-llama

stop:
	-$(BIN)/python scripts/llama_server.py stop --port $(PORT)

# The demo: the quickstart executed as a reader runs it; it generates the tiny model and serves it itself.
demo: $(STAMP)
	$(BIN)/python scripts/demo.py

# Open the tutorials in JupyterLab; each notebook starts the llama.cpp servers it needs (%llm serve).
lab: $(STAMP)
	$(BIN)/jupyter lab --ip 127.0.0.1 notebooks/quickstart.ipynb

test: $(STAMP) browser
	$(BIN)/python -m pytest

# sdist + wheel in dist/ (the wheel carries the prebuilt labextension, rebuilt first if labextension/ changed).
dist: $(STAMP)
	$(BIN)/python scripts/build_dist.py --out dist

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .cache build dist jupyter_llm/labextension labextension/node_modules labextension/lib

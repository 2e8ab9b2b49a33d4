# Two entry points: `make demo` runs the main job, `make test` runs the tests (and a strict docs build).
# Both create .venv and install the project into it on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test docs docs-check lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench,train,docs]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m benchmarks

test: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	$(BIN)/python -m pytest -n 2

# The documentation site (mkdocs.yml): `docs` builds it into site/, `docs-check` only checks that it
# builds without a warning (tests/test_docs.py runs the same check inside `make test`).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

docs-check: $(STAMP)
	tmp=$$(mktemp -d) && NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir $$tmp; \
	status=$$?; rm -rf $$tmp; exit $$status

lint: $(STAMP)
	$(BIN)/python -m ruff check --fix .
	$(BIN)/python -m ruff format .

clean:
	rm -rf $(VENV)

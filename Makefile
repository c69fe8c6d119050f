# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv on first use and install everything.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORDNET_DIR ?= /usr/share/wordnet

.PHONY: install install-system demo test bench clean

install: $(STAMP) install-system

# quaterion 0.1.35 and quaterion-models 0.1.19 declare Python < 3.11 and
# protobuf < 3.20, which conflicts with qdrant-client; they are installed after
# the rest, without their declared dependencies (their real runtime needs are in
# requirements.lock). pipeline/compat.py fixes them for this stack.
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --ignore-requires-python quaterion==0.1.35 quaterion-models==0.1.19
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# WordNet 3.0 (demo data) and docker-compose (validates docker-compose.yml in the
# tests) come from Debian packages where apt-get is available.
install-system:
	@if [ ! -f $(WORDNET_DIR)/data.noun ] || ! command -v docker-compose >/dev/null 2>&1; then \
		if command -v apt-get >/dev/null 2>&1; then \
			SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
			$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq wordnet-base docker-compose >/dev/null; \
		else \
			echo "Install WordNet 3.0 (Debian/Ubuntu package wordnet-base) and docker-compose, then rerun."; \
			exit 1; \
		fi; \
	fi

demo: install
	$(PY) -m pipeline run --config configs/wordnet.yaml

test: install
	$(PY) -m pytest -q tests

bench: install
	$(PY) -m pipeline.bench

clean:
	rm -rf runs .pytest_cache

# clara-ray: `make run` starts the embedded platform and runs the sample job; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATA   ?= $(HOME)/.clara-ray
SAMPLE := $(DATA)/sample-study
PEERS  := dcmtk dicom3tools orthanc openssl chromium kubectl

.PHONY: setup peers run stop test test-unit bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(BIN)/pip install -q -e '.[dev,ai,triton]'
	touch $(STAMP)

setup: $(STAMP)

# Real peers the tests talk to (Debian packages: DICOM tools, Orthanc, the browser that
# Playwright drives, kubectl for `kubectl kustomize`); installed only when missing.
peers:
	@missing=""; for p in $(PEERS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# The embedded demo accepts DICOM from any peer on this machine (reject_unknown_sources off)
# and runs ct-lung-bone on studies sent to the AE title CLARA.
run: setup
	CLARA_RAY_DICOM__REJECT_UNKNOWN_SOURCES=false $(BIN)/clara-ray up
	@test -f $(SAMPLE)/CT000001.dcm || $(BIN)/clara-ray sample-study $(SAMPLE)
	$(BIN)/python -m clara_ray.run pipelines/ct-lung-bone.yaml $(SAMPLE) --param destination=none --download results
	@$(BIN)/clara-ray dicom create aetitle CLARA --pipeline ct-lung-bone --timeout 5 >/dev/null
	@echo
	@$(BIN)/clara-ray status
	@echo
	@echo "The platform stays up: '$(BIN)/clara-ray list jobs'; send a study with"
	@echo "'storescu -aec CLARA 127.0.0.1 11112 +sd $(SAMPLE)'; 'make stop' stops it."

stop:
	@if [ -x $(BIN)/clara-ray ]; then $(BIN)/clara-ray down; fi

# tests/multinode starts Ray clusters of its own, so it runs in a pytest process of its own.
test: setup peers
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest tests/multinode

test-unit: setup
	$(BIN)/python -m pytest tests/unit

bench: setup peers
	$(BIN)/python -m benchmarks

lint: setup
	$(BIN)/ruff check clara_ray pipelines serve tests benchmarks
	$(BIN)/ruff format --check clara_ray pipelines serve tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache .mypy_cache results

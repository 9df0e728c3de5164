# pullthrough developer commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# SAM CLI lives apart from the project (its pins clash with ours), on the Python of the functions' runtime.
SAM_VENV := .venv-sam
PYTHON_LAMBDA ?= $(or $(lastword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12)),python3.12)
HOST ?= 127.0.0.1
PORT ?= 5000
DATA_DIR ?= .pullthrough
# Debian packages the end-to-end tests drive: a real upstream registry and real pull clients.
# chromium: the status page's browser test; debootstrap: the Lambda base image `sam local` runs on (no registry here).
DEBIAN_PACKAGES := docker-registry skopeo podman containerd umoci busybox-static runc wrk uidmap chromium debootstrap
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help install sam-tools lambda-build lambda-bytecode run test lint typecheck unit system-deps bench clean

help: ## Show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/pullthrough: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/pullthrough ## Create .venv and install pullthrough with its dev tools

$(SAM_VENV)/bin/sam:
	$(PYTHON_LAMBDA) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/pip install --quiet aws-sam-cli
	@touch $@

sam-tools: $(SAM_VENV)/bin/sam ## Install SAM CLI into .venv-sam (Python 3.12, as the functions run)

# `sam build` ships no bytecode (wheels hold none, and it leaves out __pycache__), and Lambda's code directory is
# read-only: without this, every cold start compiles every module again (0.6 s of the API function's ~1.2 s here).
# unchecked-hash: the package's zip dates every file 1980, which no timestamp-checked .pyc would survive.
LAMBDA_BUILD_DIR ?= .aws-sam/build
LAMBDA_RUNTIME := $(shell sed -n 's/^ *Runtime: *\(python[0-9.]*\).*/\1/p' template.yaml | head -1)
SAM_BUILD_ARGS ?=

lambda-build: sam-tools ## sam build, then the functions' bytecode (what `sam deploy` uploads; see docs/aws.md)
	PATH="$(abspath $(SAM_VENV))/bin:$$PATH" $(SAM_VENV)/bin/sam build $(SAM_BUILD_ARGS)  # its python3.12 builds
	$(MAKE) --no-print-directory lambda-bytecode

lambda-bytecode: ## Compile the modules of every function in $(LAMBDA_BUILD_DIR) for the functions' runtime
	@$(PYTHON_LAMBDA) -c 'import sys; v = "python%d.%d" % sys.version_info[:2]; \
		sys.exit(None if v == "$(LAMBDA_RUNTIME)" else f"$(PYTHON_LAMBDA) is {v}; the functions run $(LAMBDA_RUNTIME)")'
	@for function in $(LAMBDA_BUILD_DIR)/*/; do \
		[ -d "$$function/handlers" ] || continue; \
		$(PYTHON_LAMBDA) -m compileall -q -j 0 --invalidation-mode unchecked-hash "$$function" || exit 1; \
	done

run: install ## Start the cache on 127.0.0.1:5000 with the built-in rules
	$(BIN)/pullthrough serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

system-deps: ## Install the Debian packages the end-to-end tests use (no service is started)
	@missing=""; for pkg in $(DEBIAN_PACKAGES); do dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee /usr/sbin/policy-rc.d >/dev/null; $(SUDO) chmod +x /usr/sbin/policy-rc.d; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		status=$$?; $(SUDO) rm -f /usr/sbin/policy-rc.d; exit $$status; \
	fi

lint: install ## ruff, import-linter (the architecture's contracts) and bandit (the security linter)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports --no-cache
	$(BIN)/bandit --quiet --recursive src --severity-level medium

typecheck: install ## mypy --strict
	$(BIN)/mypy --strict src

unit: install ## Unit, contract and API tests only (seconds)
	$(BIN)/pytest -m "not e2e" -q

test: system-deps install sam-tools lint typecheck ## Everything: static checks, unit, contract, API and end-to-end tests
	$(BIN)/pytest -q

bench: system-deps install sam-tools ## Benchmarks: against distribution's proxy and the stack's floors (tables; ~12 min)
	$(BIN)/python bench/bench_pull.py
	$(BIN)/python bench/bench_coldstart.py --runs 5

clean: ## Remove the virtualenv and local data
	rm -rf $(VENV) $(SAM_VENV) $(DATA_DIR) build *.egg-info src/*.egg-info

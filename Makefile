# skyops: the menu. Each recipe is one line that hands off to uv or nox; logic lives in scripts/.
#   make launch JOB=examples/train.py NODES=2     run a job (local backend by default)
#   make test                                     run the test suite
.DEFAULT_GOAL := help
SHELL := /bin/bash

UV_VERSION := 0.13.9
NOX := nox==2026.10.20
JOB ?=
NODES ?=
GPUS ?=
RUN ?=
BACKEND ?=
ARGS ?=
FLAGS ?=
ID ?=

# Let uv use the wheel folder pip is configured with (torch's CPU build on these machines), so
# nothing downloads a multi-GB CUDA build: PIP_FIND_LINKS, else pip's own configuration.
ifeq ($(UV_FIND_LINKS),)
PIP_LINKS := $(or $(PIP_FIND_LINKS),$(shell python3 -m pip config get global.find-links 2>/dev/null))
ifneq ($(PIP_LINKS),)
export UV_FIND_LINKS := $(PIP_LINKS)
endif
endif

# Backend sky: uv compiles the launcher's environment when it installs it, so `import sky` takes ~2 s
# instead of ~5-7 s where Python writes no .pyc itself. Each call then re-checks every compiled file
# (0.4-1.7 s here, and a "Bytecode compiled" line), so not for the local backend, which never imports
# SkyPilot (job.yaml's setup compiles the nodes' environments). docs/decisions/locked-environments.md
ifneq ($(filter sky,$(BACKEND) $(SKYOPS_BACKEND)),)
launch dry-run status logs cancel: export UV_COMPILE_BYTECODE ?= 1
endif

LAUNCH_FLAGS = $(if $(NODES),--nodes $(NODES)) $(if $(GPUS),--gpus $(GPUS)) $(if $(RUN),--run $(RUN)) $(if $(BACKEND),--backend $(BACKEND)) $(FLAGS)
JOBS_FLAGS = $(if $(BACKEND),--backend $(BACKEND))
# $(call require,VAR,example): stop with a clear message when a required variable is empty.
require = $(if $($(1)),,$(error $(1) is required, e.g. $(2)))

.PHONY: help uv launch dry-run test lint nccl status logs cancel notify-test

help: ## Show this menu
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

uv: ## Install uv from PyPI if this machine has none
	@command -v uv >/dev/null 2>&1 || { python3 -m pip install --quiet "uv==$(UV_VERSION)" || python3 -m pip install --quiet --user "uv==$(UV_VERSION)"; } && { command -v pyenv >/dev/null 2>&1 && pyenv rehash || true; } && command -v uv >/dev/null 2>&1 || { echo "uv was installed but is not on PATH: add \"$$(python3 -m site --user-base)/bin\" to PATH" >&2; exit 1; }

launch: uv ## Run JOB (NODES, GPUS, RUN, BACKEND optional; ARGS go to the job, FLAGS to the launcher)
	@$(call require,JOB,make launch JOB=examples/train.py NODES=2)uv run --script scripts/local/launch.py $(LAUNCH_FLAGS) $(JOB) $(ARGS)

dry-run: uv ## Print the resolved task as SkyPilot YAML (secrets redacted); launches nothing
	@$(call require,JOB,make dry-run JOB=examples/train.py)uv run --script scripts/local/launch.py --dry-run $(LAUNCH_FLAGS) $(JOB) $(ARGS)

test: uv ## Run the test suite (what CI runs; ARGS go to pytest)
	uvx --from $(NOX) nox -s tests -- $(ARGS)

lint: uv ## ruff, mypy, the script locks are current, the contract's copies agree (nox -s lint locks contract types)
	uvx --from $(NOX) nox -s lint locks contract types

nccl: uv ## NCCL preflight on this machine (ARGS go to nccl_test.py, e.g. ARGS="--nproc 4"; stdout: data only)
	@uvx --from $(NOX) nox -s nccl -- $(ARGS)

status: uv ## Show jobs, with failure reason and recovery count (BACKEND=local|sky)
	@uv run --script scripts/local/jobs.py $(JOBS_FLAGS) status

logs: uv ## Show a job's logs (ID required; FLAGS="--follow" to stream)
	@$(call require,ID,make logs ID=3)uv run --script scripts/local/jobs.py $(JOBS_FLAGS) logs $(ID) $(FLAGS)

cancel: uv ## Cancel a job (ID required; FLAGS="--force" skips the grace period)
	@$(call require,ID,make cancel ID=3)uv run --script scripts/local/jobs.py $(JOBS_FLAGS) cancel $(FLAGS) $(ID)

notify-test: uv ## Send a test message to every notification channel in .env or the environment (one line each)
	@uv run --script scripts/local/jobs.py notify-test

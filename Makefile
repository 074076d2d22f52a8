# The two commands a new engineer needs: `make run` (the whole mesh on embedded defaults)
# and `make test` (the whole suite). Everything else is installed by these targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEPS := requirements/dev.txt libs/contracts/pyproject.toml libs/meshkit/pyproject.toml \
        libs/meshdev/pyproject.toml \
        $(wildcard services/*/pyproject.toml)

.PHONY: run demo test venv tools image proto proto-check lint buf-lint tokens clean

$(STAMP): $(DEPS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/dev.txt
	@touch $(STAMP)

venv: $(STAMP)

# promtool (the alert rules' unit tests) from Debian's `prometheus` package: only the binary is
# extracted into the venv, no Prometheus server is installed (scripts/install_promtool.py).
# kubectl (kustomize) and kubernetes-validate come from requirements/dev.txt.
$(VENV)/bin/promtool: scripts/install_promtool.py | $(STAMP)
	$(PY) scripts/install_promtool.py --dest $(VENV)/bin

## tools: the deploy tests' tools (promtool; kubectl and kubernetes-validate are in the venv)
tools: $(STAMP) $(VENV)/bin/promtool

## image: build tickettoken-mesh:dev and tickettoken-mesh-dev:dev with docker or podman
## (fails with a clear message when neither has a working engine)
image: $(STAMP)
	$(PY) scripts/build_image.py --tag dev

## run: start PostgreSQL + Redis (embedded unless DATABASE_URL / REDIS_URL are set) and all four services
run: $(STAMP)
	$(PY) -m meshdev.launcher run

## demo: one purchase through the mesh `make run` started, step by step with timings (DEMO_ARGS=--timeout 60)
demo: $(STAMP)
	$(PY) -m meshdev.demo $(DEMO_ARGS)

## test: lint, contract checks and the whole test suite against real Postgres, Redis and gRPC
test: $(STAMP) tools lint proto-check
	$(PY) -m pytest

## proto: regenerate the contracts package from protos/
proto: $(STAMP)
	$(PY) scripts/gen_protos.py

proto-check: $(STAMP)
	$(PY) scripts/gen_protos.py --check

## buf-lint: buf lint (STANDARD), format and breaking checks on protos/ (buf from the buf-bin wheel)
buf-lint: $(STAMP)
	$(PY) scripts/buf_check.py lint
	$(PY) scripts/buf_check.py format
	$(PY) scripts/buf_check.py breaking

lint: $(STAMP) buf-lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) scripts/settings_doc.py --check

## tokens: print dev JWTs for grpcurl
tokens: $(STAMP)
	$(PY) -m meshdev.tokens

clean:
	rm -rf $(VENV) .dev .pytest_cache .mypy_cache .ruff_cache

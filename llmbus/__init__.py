"""llmbus: chat requests over Kafka, answered by vLLM, audited in PostgreSQL."""

__version__ = "0.1.0"

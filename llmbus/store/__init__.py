"""The audit trail in PostgreSQL: tables, the batched writer, and engine creation."""

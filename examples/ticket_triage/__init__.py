"""An example event-driven service on llmbus (see README.md here)."""

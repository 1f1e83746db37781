"""Consumers: the GPU worker that answers requests, and the auditor that records them."""

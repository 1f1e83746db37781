"""Batch jobs, replay runs and exports: what batch users and analysts run, built on the
producers (publishing) and the store (audit trail) packages."""

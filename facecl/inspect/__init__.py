"""Inspect artifacts: manifest and lineage."""

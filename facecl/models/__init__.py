"""Backbones (registry-selected)."""

"""Experiment configurations (ml_collections config files with presets)."""

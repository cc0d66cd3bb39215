"""The package version: setup.cfg reads it from here, `metadata.json` of presets records it."""

__version__ = "0.1.0"

"""Importers of the log formats researchers already have (one module per format)."""

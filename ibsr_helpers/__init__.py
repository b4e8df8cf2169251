"""Helpers for the IBSR18 brain tissue segmentation course."""

__version__ = "0.1.0"

"""Helpers for the IBSR18 brain tissue segmentation course."""

import os
import sys

__version__ = "0.2.0"

if sys.platform == "darwin":  # Apple GPUs: run ops PyTorch lacks there on the CPU instead
    os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")

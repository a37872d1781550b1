"""f-EBM Restore: energy-based models trained by f-divergence minimisation, for image restoration.

    from febm import load_model, generate, denoise, inpaint
"""

from .model import EBM, ModelNotFoundError, list_models, load_model
from .restore import Restoration, denoise, estimate_sigma, generate, inpaint

__all__ = ["EBM", "ModelNotFoundError", "Restoration", "denoise", "estimate_sigma", "generate", "inpaint",
           "list_models", "load_model"]

"""f-EBM Restore: energy-based models trained by f-divergence minimisation, for image restoration.

    from febm import load_model, generate, denoise, inpaint, deblur, upscale

Any other linear degradation: ``febm.inverse.restore(model, image, operator)`` with an operator of
``febm.operators`` (``febm.restore`` is the module of denoise and inpaint).
"""

from .inverse import deblur, upscale
from .model import EBM, ModelNotFoundError, list_models, load_model
from .restore import Restoration, denoise, estimate_sigma, generate, inpaint

__all__ = ["EBM", "ModelNotFoundError", "Restoration", "deblur", "denoise", "estimate_sigma", "generate", "inpaint",
           "list_models", "load_model", "upscale"]

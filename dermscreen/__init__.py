"""dermscreen: distributed batch screening of dermoscopic images for melanoma."""

__version__ = "0.1.0"

"""Conditional StyleGAN2-ADA with factored condition embeddings for rare-disease image synthesis."""
__version__ = "0.1.0"

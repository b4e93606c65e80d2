"""Thin kfp v2 components, each a few lines over one library function."""

"""The version of dslc (pyproject.toml says the same), at the bottom layer: generated files name it."""
__version__ = "0.1.0"

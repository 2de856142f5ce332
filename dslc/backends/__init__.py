"""Backends: each reads only the IR and the registry."""

"""dslc: describe a network once in a `.dl` file; get PyTorch, ONNX, diagrams and training.

    import dslc
    prog = dslc.load("specs/resnet.dl")
    net = prog.build("ResNet18", seed=0, classes=10)
"""
__version__ = "0.1.0"

from .diagnostics import DslcError  # noqa: E402


def load(path: str):
    """Parse, resolve and check a `.dl` file and its imports; raises DslcError."""
    from .api import load as _load
    return _load(path)


__all__ = ["DslcError", "__version__", "load"]

"""dslc: describe a network once in a `.dl` file; get PyTorch, ONNX, diagrams and training.

    import dslc
    prog = dslc.load("specs/resnet.dl")
    net = prog.build("ResNet18", seed=0, classes=10)
"""
from .diagnostics import DslcError
from .version import __version__


def load(path: str):
    """Parse, resolve and check a `.dl` file and its imports; raises DslcError."""
    from .api import load as _load
    return _load(path)


__all__ = ["DslcError", "__version__", "load"]

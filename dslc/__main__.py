"""`python -m dslc ...`: the same command line as `dslc ...`."""
from .cli import run

run()

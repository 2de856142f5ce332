"""`python -m dslc.train FILE ...`: `dslc train FILE ...`, the program torchrun runs in each process
of a data-parallel run (`torchrun --nproc-per-node=2 -m dslc.train spec.dl --plan P`)."""
import sys

from .cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]], prog_name="dslc train")

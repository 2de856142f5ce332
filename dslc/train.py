"""`python -m dslc.train FILE ...`: `dslc train FILE ...`, the program torchrun runs in each process
of a data-parallel run (`torchrun --nproc-per-node=2 -m dslc.train spec.dl --plan P`).

A process leaves as the `dslc` command does, its output flushed and without the interpreter's
teardown (`os._exit`). The teardown aborted it now and then ("terminate called without an active
exception", SIGABRT, about one launch in ten on a busy machine): `destroy_process_group` leaves
gloo's worker threads running while FSDP's and DDP's modules still hold the group, and a thread
that drops the last reference to a finished collective (a barrier holds the ones before it) frees
tensors that Python objects own. Freeing them takes the GIL, which a thread cannot take while the
interpreter finalizes: it is ended where C++ cannot unwind, and the process aborts. torch leaves
it so (pytorch/pytorch#179291, an atexit hook to destroy the groups first, was abandoned; #190489
is the same abort when a group is not destroyed).
"""
import sys

from .cli import run

if __name__ == "__main__":
    run(["train", *sys.argv[1:]], prog_name="dslc train")

"""`python -m dslc.train FILE ...`: `dslc train FILE ...`, the program torchrun runs in each process
of a data-parallel run (`torchrun --nproc-per-node=2 -m dslc.train spec.dl --plan P`).

A process whose run ended well leaves as the `dslc` command does: its output flushed, without the
interpreter's teardown (`os._exit`). The teardown aborted it now and then, a finished run reported
as failed ("terminate called without an active exception", SIGABRT): `destroy_process_group`
leaves gloo's threads running while FSDP's and DDP's modules still hold the group, and a thread
that drops a finished collective (or a barrier holding the ones before it) frees tensors that
Python objects own, which takes the GIL. A thread that waits for the GIL while the main thread
starts the teardown is ended when it gets it (the interpreter is finalizing), where C++ cannot
unwind (gloo's destructors), so the process aborts. torch leaves it so: pytorch/pytorch#179291
(destroy the groups in an atexit hook) was abandoned; #190489 is the same abort without
`destroy_process_group`. A process that fails exits as before: the run has failed already, and
the others, which torchrun stops once one has failed, keep the time to leave their own messages.
"""
import os
import sys

from .cli import main


def _leave() -> None:
    try:
        main(["train", *sys.argv[1:]], prog_name="dslc train")
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)


if __name__ == "__main__":
    _leave()

"""The language server's garbage collection: out of the way of the checks.

A check pauses the cyclic collector while it builds syntax trees and graphs (as `dslc check`
does, frontend.check.gc_paused). Turned back on, the collector's next young collection would
scan every object the check made, most of them alive (the new analysis and the caches): 20 ms
of a 500-line file's 80 ms, paid before the diagnostics go out. Here the check's objects are
frozen instead (`gc.freeze`: moved out of the generations the collector scans, at no cost),
so the collections between checks see only what the server made since. The checks make no
reference cycles (what they drop, reference counting frees); whatever else does is freed by a
full collection, run after a check once the memory in use (`sys.getallocatedblocks`, which
costs nothing, where counting the frozen objects walks them all) has grown by half since the
last one: memory stays within 1.5 times what is alive, and a collection's cost is spread over
the checks that made its garbage, as the collector's own generations spread theirs.
"""
from __future__ import annotations

import gc
import sys

GROWTH = 1.5   # a full collection when the memory in use reaches this times the last one's


class FrozenHeap:
    """A context manager for each check (reusable): the collector paused inside, the check's
    objects frozen after, and a full collection when the memory in use has grown by GROWTH."""

    def __init__(self):
        self.survivors = 0   # the memory blocks in use after the last full collection (or the first check)
        self.full = 0        # full collections run

    def __enter__(self):
        self._was = gc.isenabled()
        gc.disable()
        return self

    def __exit__(self, *exc):
        gc.freeze()
        if not self.survivors:   # the first check: what it made is the baseline (a collection now would delay its diagnostics)
            self.survivors = sys.getallocatedblocks()
        elif sys.getallocatedblocks() > GROWTH * self.survivors:
            self.collect()
        if self._was:
            gc.enable()

    def collect(self) -> None:
        """A full collection of everything, frozen or not; what survives is frozen again."""
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.survivors = sys.getallocatedblocks()
        self.full += 1

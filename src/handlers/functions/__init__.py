"""The Lambda entry points, one module per function in template.yaml (`Handler: handlers.functions.<name>.handler`).
Each builds its handler once per container, from the environment the template sets, inside `cold_start()`."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cold_start() -> Iterator[None]:
    """Builds a function without the cyclic garbage collector. A cold start allocates a few hundred thousand objects
    that live as long as the container (modules, FastAPI's routes, botocore's service models), and the collector
    would walk them over and over while they are made: about a tenth of a cold start (bench/bench_coldstart.py).
    Afterwards they are frozen out of its way, so no collection during a request walks them either; the price is
    the little cyclic garbage the build itself left, kept for the container's life."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()

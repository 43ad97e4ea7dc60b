"""Measured speed of an input pipeline: images per second of the batches it yields (`effnetx-data-bench`)."""

import time


def images_per_second(batches, warmup: int, count: int) -> float:
    """Reads `warmup` batches, then times `count` more; images/s over the timed ones."""
    iterator = iter(batches)
    try:
        for _ in range(warmup):
            next(iterator)
        start, images = time.perf_counter(), 0
        for _ in range(count):
            images += len(next(iterator)["label"])
        return images / (time.perf_counter() - start)
    finally:
        if hasattr(iterator, "close"):
            iterator.close()

"""A Python process with N fake CPU devices that runs `train_and_evaluate` jobs for the tests.

The tests compare runs on 1, 2 and 8 devices. A device count is fixed when JAX starts, so those runs
need processes of their own; one long-lived process per device count, fed jobs over a pipe, imports
JAX, TensorFlow and TFDS once instead of once per run (`DeviceWorker` in conftest starts it).

Protocol: the parent writes pickled `(config, workdir)` jobs to stdin; for each the worker writes back
a pickled dict with `devices`, `metrics` (or `error`, the exception as `Type: message`) and `log`, the
warnings and errors logged during the job. Anything else the job prints goes to stderr.
"""

import logging
import os
import pickle
import sys


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def main():
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not corrupt the replies

    import jax

    from effnetx_jax.train import train_and_evaluate

    jobs = sys.stdin.buffer
    while True:
        try:
            config, workdir = pickle.load(jobs)
        except EOFError:
            return
        collect = _Collect()
        logging.getLogger().addHandler(collect)
        try:
            reply = {"metrics": train_and_evaluate(config, workdir)}
        except Exception as error:  # reported to the test, which asserts on it
            reply = {"error": f"{type(error).__name__}: {error}"}
        finally:
            logging.getLogger().removeHandler(collect)
        pickle.dump({"devices": jax.device_count(), "log": collect.lines, **reply}, replies)
        replies.flush()


if __name__ == "__main__":
    main()

"""Loading TensorFlow and Keras quietly, once, only in the commands that need them."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """TensorFlow's C++ start-up logs bypass Python and its log-level variables: mute fd 2."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def load_tensorflow(threads: int = 0) -> None:
    """Import TensorFlow and Keras; `threads` > 0 caps the threads of each operation and of the
    operations run at once (it takes effect only before TensorFlow first runs anything)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # The data pipeline and decoding loops are TensorFlow: another Keras backend cannot run them.
    os.environ["KERAS_BACKEND"] = "tensorflow"
    with _native_stderr_silenced():
        import keras  # noqa: F401
        import tensorflow as tf

        if threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(threads)
            except RuntimeError:  # already running in this process: its threads stay as they are
                pass
        tf.config.list_physical_devices()  # device discovery logs too, so do it now
    tf.get_logger().setLevel("ERROR")
    warnings.filterwarnings("ignore", module=r"keras(\.|$)")

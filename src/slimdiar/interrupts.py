"""Ctrl-C held back while compiled extensions load.

Python turns SIGINT into :class:`KeyboardInterrupt` at the next bytecode it runs. When that
bytecode is a callback run by the initialisation of a pybind11 extension (torch, onnx,
onnxruntime), the exception cannot cross the C++ code that called it and the process aborts
with ``terminate called after throwing an instance of 'pybind11::error_already_set'`` and a
core dump. :func:`interrupts_held` records a Ctrl-C during such a block and raises it once the
block is done, where the command line's error boundary turns it into exit status 130.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Run the block with SIGINT recorded, not raised; raise it afterwards if one came.

    Only Python's own SIGINT handler is replaced: an ignored SIGINT, a handler of the caller's,
    or a call from another thread than the main one leaves signals as they are.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    arrived: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: arrived.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if arrived:
        raise KeyboardInterrupt

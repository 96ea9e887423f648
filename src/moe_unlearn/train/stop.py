"""A graceful stop of the loop: SIGINT / SIGTERM become a checkpoint at the next step boundary,
at the same step in every process."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator

import torch

from moe_unlearn.core.dist import all_reduce_sum


class GracefulStop:
    """SIGINT/SIGTERM: the first asks for a checkpoint at the next step boundary; a second
    SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.requested = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: Any) -> None:
            if self.requested and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.requested = True

        for s in old:
            signal.signal(s, handler)
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def agreed(self) -> bool:
        """Whether any process was asked to stop (they all stop at the same step)."""
        return bool(all_reduce_sum(torch.tensor(float(self.requested))) > 0)

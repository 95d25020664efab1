"""Process memory figures for logs, tests and benchmarks (Linux /proc; zeros elsewhere)."""
from __future__ import annotations

import threading
import time


def _status_kb(field: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def private_rss() -> int:
    """Anonymous resident bytes: memory only this process holds (mmap'd file pages excluded)."""
    return _status_kb("RssAnon") * 1024


def rss() -> int:
    return _status_kb("VmRSS") * 1024


class PeakSampler:
    """Samples private_rss() in a background thread; `with PeakSampler() as p: ...; p.peak`."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak, self._stop = interval, private_rss(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        self.peak = max(self.peak, private_rss())

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()

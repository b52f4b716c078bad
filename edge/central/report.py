"""What a headless ingest worker prints: a summary line per interval, not a line per message.

A fleet sends about a thousand hits a second; one journald line each would drown the journal and
cost the worker CPU. Refused messages are security-relevant, so the first few of each interval
are printed in full and the rest counted: a hostile device cannot flood the log either.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

REFUSALS_SHOWN = 10  # per interval; the rest are counted in the summary


class HeadlessReport:
    def __init__(
        self,
        every_s: float = 60.0,
        *,
        each: bool = False,
        write: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every_s = every_s
        self.each = each
        self.write = write or (lambda line: print(line, flush=True))
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self.refusals_shown = 0
        self.since = clock()

    def record(self, topic: str, result: Any) -> None:
        """One stored (or refused) message, as the worker reports it after its commit."""
        self.counts[result.kind] += 1
        if self.each:
            self.write(f"{result.kind:<9} {topic} {result.detail}")
        elif result.kind == "rejected" and self.refusals_shown < REFUSALS_SHOWN:
            self.refusals_shown += 1
            self.write(f"rejected  {topic} {result.detail}")

    def tick(self) -> None:
        if self.clock() - self.since >= self.every_s:
            self.flush()

    def flush(self) -> None:
        """The summary of the interval so far (nothing when nothing arrived), then a new interval."""
        now = self.clock()
        if self.counts:
            parts = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts.items()))
            hidden = self.counts["rejected"] - self.refusals_shown
            more = f" ({hidden} refusals not shown)" if hidden > 0 and not self.each else ""
            self.write(f"in the last {now - self.since:.0f}s: {parts}{more}")
        self.counts.clear()
        self.refusals_shown = 0
        self.since = now

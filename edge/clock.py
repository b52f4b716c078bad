"""Clocks: the wall clock for timestamps, the monotonic clock for intervals, injectable for tests.

The wall clock of a device jumps: a Raspberry Pi has no battery-backed clock and boots at
its last saved time until NTP corrects it, and an operator may set it by hand. Intervals
(cooldowns, timeouts, track gaps, uptime) use the monotonic clock, which never jumps;
the wall clock only stamps events. Where a stored wall time is compared with "now" (the
outbox age bound), the jump is detected by comparing the two clocks and compensated.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch (may jump)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards or jumps (meaningless across processes)."""
        ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK = SystemClock()

# A drift between the two clocks larger than this is a jump of the wall clock, not NTP slewing.
JUMP_TOLERANCE_S = 60.0


class JumpDetector:
    """Notices when the wall clock moved relative to the monotonic clock since the last look."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._offset = clock.time() - clock.monotonic()

    def jump(self) -> float:
        """Seconds the wall clock jumped since the last accepted jump (positive: forward), or 0.0 within the tolerance."""
        delta = (self.clock.time() - self.clock.monotonic()) - self._offset
        return 0.0 if abs(delta) <= JUMP_TOLERANCE_S else delta

    def accept(self, delta: float) -> None:
        """The jump has been dealt with (for instance committed to the database): measure from here on."""
        self._offset += delta

"""A headless ingest worker's output stays bounded at fleet rates: summaries, and only the first refusals in full."""

from __future__ import annotations

from edge.central.report import REFUSALS_SHOWN, HeadlessReport
from edge.central.store.records import IngestResult


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_thousand_hits_make_one_summary_line_not_a_thousand() -> None:
    lines: list[str] = []
    clock = Clock()
    report = HeadlessReport(60, write=lines.append, clock=clock)
    for i in range(1000):
        report.record("edge/v1/pole-1/hits", IngestResult("hit", f"event {i}"))
        report.tick()
    assert lines == []
    clock.t = 60.0
    report.tick()
    assert lines == ["in the last 60s: 1000 hit"]
    clock.t = 200.0
    report.tick()  # nothing arrived: nothing printed
    assert len(lines) == 1


def test_refusals_are_shown_up_to_a_bound_per_interval_and_the_rest_counted() -> None:
    lines: list[str] = []
    clock = Clock()
    report = HeadlessReport(60, write=lines.append, clock=clock)
    for i in range(REFUSALS_SHOWN + 15):
        report.record("edge/v1/pole-6/hits", IngestResult("rejected", f"bad {i}"))
    assert lines == [f"rejected  edge/v1/pole-6/hits bad {i}" for i in range(REFUSALS_SHOWN)]
    report.flush()
    assert lines[-1] == f"in the last 0s: {REFUSALS_SHOWN + 15} rejected (15 refusals not shown)"
    report.record("edge/v1/pole-6/hits", IngestResult("rejected", "again"))  # a new interval shows them again
    assert lines[-1] == "rejected  edge/v1/pole-6/hits again"


def test_each_prints_every_message_for_small_sites_and_debugging() -> None:
    lines: list[str] = []
    report = HeadlessReport(60, each=True, write=lines.append, clock=Clock())
    report.record("edge/v1/pole-1/hits", IngestResult("hit", "stored"))
    report.record("edge/v1/pole-1/status", IngestResult("status", "online"))
    assert lines == ["hit       edge/v1/pole-1/hits stored", "status    edge/v1/pole-1/status online"]

"""The match threshold applied to one face: a calibrated base, raised for low-quality faces.

The base is calibrated per embedder (``edge calibrate``) and stored with the model in
``models/manifest.json``. Small, blurred or turned faces produce less reliable embeddings
whose impostor scores spread higher, so they must clear a higher bar instead of being
silently matched at the same one.

The base holds a pair false-accept rate (say 1e-4). A passer-by is compared with every entry, so
the chance that someone on no list matches somebody (FPIR) grows with the watchlist: about
entries × pair FAR. The calibration therefore also stores stricter thresholds for smaller pair
rates, and a watchlist too large for the shipped one to hold ``recognition.max_fpir`` is matched at
the stricter row that does. A small watchlist is never matched below the shipped threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edge.errors import ModelError
from edge.models import ModelSpec
from edge.quality import Quality


@dataclass(frozen=True)
class QualityRule:
    """Add ``raise_by`` to the threshold when ``metric`` is below ``below`` (or |yaw| above ``above``)."""

    metric: str
    raise_by: float
    below: float | None = None
    above: float | None = None

    def applies(self, q: Quality) -> bool:
        value = abs(q.yaw) if self.metric == "abs_yaw" else float(getattr(q, self.metric))
        if self.below is not None and value < self.below:
            return True
        return self.above is not None and value > self.above


@dataclass(frozen=True)
class StricterRow:
    """The calibrated base and size rules for a pair FAR below the shipped one."""

    pair_far: float
    base: float
    rules: tuple[QualityRule, ...]


# n × pair FAR is compared with max_fpir in floating point: 300 × 1e-4 is 0.030000000000000002.
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class ThresholdPolicy:
    base: float
    rules: tuple[QualityRule, ...] = field(default_factory=tuple)
    pair_far: float | None = None  # the pair false-accept rate the base was calibrated for
    stricter: tuple[StricterRow, ...] = ()  # by falling pair FAR
    max_fpir: float = 0.01
    floor: ThresholdPolicy | None = None  # a stricter row never goes below the shipped policy, at any face

    @classmethod
    def from_manifest(cls, spec: ModelSpec, override: float | None = None, max_fpir: float = 0.01) -> ThresholdPolicy:
        """The calibrated policy; an ``override`` (``recognition.threshold``) replaces the base and drops the stricter rows."""
        raw: Any = spec.extra.get("threshold")
        if raw is None and override is None:
            raise ModelError(
                f"embedder {spec.name} has no calibrated threshold in models/manifest.json; "
                "run `edge calibrate --write` or set recognition.threshold"
            )
        raw = raw or {}
        rules = tuple(QualityRule(**r) for r in raw.get("quality_rules", []))
        if override is not None:
            return cls(base=float(override), rules=rules, max_fpir=max_fpir)
        stricter = tuple(
            StricterRow(float(r["pair_far"]), float(r["base"]), tuple(QualityRule(**q) for q in r.get("quality_rules", [])))
            for r in sorted(raw.get("stricter", []), key=lambda r: -float(r["pair_far"]))
        )
        far = raw.get("calibration", {}).get("target_pair_far")
        return cls(float(raw["base"]), rules, None if far is None else float(far), stricter, max_fpir)

    def _within(self, entries: int, pair_far: float) -> bool:
        return entries * pair_far <= self.max_fpir * (1 + _TOLERANCE)

    def entries_held(self) -> int | None:
        """The most entries this policy keeps within ``max_fpir`` (None: its pair rate is not known)."""
        return None if self.pair_far is None else int(self.max_fpir / self.pair_far * (1 + _TOLERANCE))

    def holds(self, entries: int) -> bool:
        """Whether this policy keeps a watchlist of ``entries`` within ``max_fpir`` (unknown pair rate: assumed)."""
        return self.pair_far is None or self._within(entries, self.pair_far)

    def for_entries(self, entries: int | None) -> ThresholdPolicy:
        """The policy for a watchlist of ``entries``: this one, or the first stricter row that holds ``max_fpir``.

        Beyond the strictest row calibrated, that row is used (``holds`` then says False). A row keeps this
        policy's rules that are not about face size, and this policy as a floor.
        """
        if entries is None or not self.stricter or self.holds(entries):
            return self
        row = next((r for r in self.stricter if self._within(entries, r.pair_far)), self.stricter[-1])
        others = tuple(r for r in self.rules if r.metric != "size_px")
        return ThresholdPolicy(max(self.base, row.base), row.rules + others, row.pair_far, (), self.max_fpir, floor=self)

    def explain(self, entries: int) -> str | None:
        """What a watchlist of ``entries`` is matched at and why, when the shipped policy does not hold it; else None."""
        if self.holds(entries):
            return None
        held = (
            f"keeps false matches of passers-by within recognition.max_fpir {self.max_fpir:g} "
            f"only up to {self.entries_held()} entries"
        )
        if not self.stricter:
            return (
                f"{entries} entries: the calibrated threshold {self.base:.3f} {held}, and no stricter threshold is "
                "calibrated for this embedder: run `edge calibrate --write`, or split the watchlist"
            )
        policy = self.for_entries(entries)
        said = (
            f"{entries} entries: the calibrated threshold {self.base:.3f} {held}, so faces are matched at "
            f"{policy.base:.3f} or more (calibrated for pair FAR {policy.pair_far:g}"
        )
        if policy.holds(entries):
            return said + ")"
        return said + f", the strictest calibrated; it holds up to {policy.entries_held()} entries): split the watchlist"

    def for_face(self, q: Quality | None, entry_threshold: float | None = None) -> float:
        """The threshold for one face: the higher of the entry's own and the base, plus quality raises."""
        t = self.base if entry_threshold is None else max(self.base, entry_threshold)
        if q is not None:
            t += sum(r.raise_by for r in self.rules if r.applies(q))
        return t if self.floor is None else max(t, self.floor.for_face(q, entry_threshold))

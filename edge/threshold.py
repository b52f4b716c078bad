"""The match threshold applied to one face: a calibrated base, raised for low-quality faces.

The base is calibrated per embedder (``edge eval --calibrate``) and stored with the model in
``models/manifest.json``. Small, blurred or turned faces produce less reliable embeddings
whose impostor scores spread higher, so they must clear a higher bar instead of being
silently matched at the same one.
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
class ThresholdPolicy:
    base: float
    rules: tuple[QualityRule, ...] = field(default_factory=tuple)

    @classmethod
    def from_manifest(cls, spec: ModelSpec, override: float | None = None) -> ThresholdPolicy:
        raw: Any = spec.extra.get("threshold")
        if raw is None and override is None:
            raise ModelError(
                f"embedder {spec.name} has no calibrated threshold in models/manifest.json; "
                "run `edge eval --calibrate` or set recognition.threshold"
            )
        base = float(override if override is not None else raw["base"])
        rules = tuple(QualityRule(**r) for r in (raw or {}).get("quality_rules", []))
        return cls(base=base, rules=rules)

    def for_face(self, q: Quality | None, entry_threshold: float | None = None) -> float:
        """The threshold for one face: the higher of the entry's own and the base, plus quality raises."""
        t = self.base if entry_threshold is None else max(self.base, entry_threshold)
        if q is not None:
            t += sum(r.raise_by for r in self.rules if r.applies(q))
        return t

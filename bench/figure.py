"""One measured figure, its target and moonshot, and how it compares."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Figure:
    scenario: str
    name: str
    value: float | None
    unit: str
    target: float
    moonshot: float
    higher_is_better: bool = True
    baseline: float | None = None  # the plain FastAPI + sse-starlette server's figure
    client_cpu: float | None = None  # load client, % of one core, during the measurement
    cpu: dict[str, float] = field(default_factory=dict)  # % of one core per process group
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def status(self) -> str:
        if self.error or self.value is None or math.isnan(self.value):
            return "error"
        if self._meets(self.moonshot):
            return "moonshot"
        return "target" if self._meets(self.target) else "missed"

    def _meets(self, bound: float) -> bool:
        assert self.value is not None
        return self.value >= bound if self.higher_is_better else self.value <= bound

    @property
    def ratio(self) -> float | None:
        """ssehub / baseline, raw (whether higher is better depends on the figure)."""
        if not self.baseline or self.value is None:
            return None
        return self.value / self.baseline

    @property
    def of_target(self) -> float | None:
        """How far toward the target: > 1 means met, whichever way is better."""
        if self.value is None or math.isnan(self.value) or not self.value or not self.target:
            return None
        return self.value / self.target if self.higher_is_better else self.target / self.value

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(status=self.status, ratio=self.ratio)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Figure:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def latency_figures(
    key: str,
    rate: float,
    p50_ms: float | None,
    p99_ms: float | None,
    targets: tuple[tuple[float, float], tuple[float, float]],
    cpu: dict[str, Any],
    details: dict[str, Any],
) -> list[Figure]:
    """A latency scenario's two figures, p50 and p99 at ``rate``; ``targets``:
    (target, moonshot) for each."""
    out = []
    for name, value, (target, moonshot) in (
        ("p50", p50_ms, targets[0]),
        ("p99", p99_ms, targets[1]),
    ):
        out.append(
            Figure(
                key,
                f"publish → client {name} at {rate:,.0f}/s",
                value,
                "ms",
                target,
                moonshot,
                higher_is_better=False,
                client_cpu=cpu.get("client"),
                cpu=cpu if name == "p50" else {},
                details=details if name == "p50" else {},
            )
        )
    return out

"""The result table: one row per measurement, with the target it is held against."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

COLUMNS = (
    "Measurement",
    "Load",
    "Rate",
    "p50 ms",
    "p99 ms",
    "Not OK",
    "CPU % of one core",
    "Lock waits",
    "Ratio",
    "Target",
    "Result",
)


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table; empty strings print as empty cells."""

    measurement: str
    load: str
    rate: str = ""
    p50_ms: str = ""
    p99_ms: str = ""
    not_ok: str = ""
    cpu: str = ""
    lock_waits: str = ""
    ratio: str = ""
    target: str = ""
    result: str = ""

    def cells(self) -> tuple[str, ...]:
        return (
            self.measurement,
            self.load,
            self.rate,
            self.p50_ms,
            self.p99_ms,
            self.not_ok,
            self.cpu,
            self.lock_waits,
            self.ratio,
            self.target,
            self.result,
        )


def render_markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines.extend("| " + " | ".join(row.cells()) + " |" for row in rows)
    return "\n".join(lines)


def rows_as_dicts(rows: list[Row]) -> list[dict[str, str]]:
    return [asdict(row) for row in rows]


def number(value: float, digits: int = 0) -> str:
    """Format with thousands separators; NaN prints as a dash."""
    if math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def milliseconds(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def verdict(met: bool, measured: str) -> str:
    """Return "met" or "missed", with the measured figure that decided it."""
    return f"met ({measured})" if met else f"**missed** ({measured})"


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")

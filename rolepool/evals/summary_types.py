"""The typed shape of `summary.json`, which `summary` builds and the reports, figures and CLI
read. The JSON is what earlier versions wrote, key for key: fields are declared in the order they
were written, and `Summary.to_json()` writes them with the same settings. Keys documented in
README are stable: `workers.<name>.architecture`, `workers.<name>.overall.<metric>`,
`workers.<name>.by_role.<role>.<metric>`, `architectures.<arch>.overall.<metric>`, `comparisons`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

from rolepool.evals.bfcl.groups import BfclSummary
from rolepool.evals.decoding import DecodingSummary
from rolepool.evals.role_expert_load import ExpertHealth

Cell = TypeVar("Cell")


class MetricCells(BaseModel, Generic[Cell]):
    """`n` and one cell per summary metric (`summary.METRICS`), in that order."""

    n: int
    exact_acc: Cell
    name_acc: Cell
    json_valid: Cell
    schema_valid: Cell
    schema_valid_first_try: Cell
    no_call_acc: Cell
    parsed: Cell
    false_call: Cell

    def cell(self, metric: str) -> Cell:
        """The cell of a metric named in a table's column list."""
        if metric not in METRIC_NAMES:
            raise KeyError(metric)
        return getattr(self, metric)


METRIC_NAMES = tuple(name for name in MetricCells.model_fields if name != "n")


class Rate(BaseModel):
    """k of n cases, with its Wilson 95% interval; `rate` None when the metric applies to none."""

    rate: float | None
    k: int
    n: int
    ci95: list[float]


class Latency(BaseModel):
    p50: float | None
    p95: float | None
    p99: float | None
    mean: float | None


class GroupStats(MetricCells[Rate]):
    """One worker's cases, or those of one role or category of it."""

    latency: Latency
    tokens_per_s: float | None
    """Completion tokens per second of model time (batching waits included)."""
    errors: int
    worker_errors: int
    refused: int


class Throughput(BaseModel):
    cases_per_s: float | None
    tokens_per_s: float | None
    active_s: float
    """Seconds during which the worker had at least one case in flight."""


class WorkerSummary(BaseModel):
    model: str
    architecture: str
    overall: GroupStats
    by_role: dict[str, GroupStats]
    by_category: dict[str, GroupStats]
    throughput: Throughput
    expert_health: ExpertHealth | None


class Pooled(BaseModel):
    k: int
    n: int
    ci95: list[float]


class ModelsRate(BaseModel):
    """An architecture's rate: the mean of its models' rates, their sd, and the pooled count."""

    rate: float | None
    sd: float | None
    per_model: dict[str, float | None]
    pooled: Pooled


class ArchitectureSummary(BaseModel):
    models: list[str]
    overall: MetricCells[ModelsRate]
    by_role: dict[str, MetricCells[ModelsRate]]


class WorkerComparison(BaseModel):
    """Two workers on the cases both were scored on (exact McNemar, Holm-adjusted)."""

    kind: Literal["workers"] = "workers"
    metric: str
    a: str
    b: str
    n: int
    both: int
    a_only: int
    b_only: int
    neither: int
    rate_a: float | None
    rate_b: float | None
    p_value: float
    test: str
    p_holm: float = 1.0
    verdict: str = ""
    text: str = ""


class ArchitectureComparison(BaseModel):
    """Two architectures, the model as the unit (exact permutation test of the mean rate)."""

    kind: Literal["architectures"] = "architectures"
    metric: str
    a: str
    b: str
    models_a: list[str]
    models_b: list[str]
    n_cases: int
    rates_a: list[float]
    rates_b: list[float]
    mean_a: float | None
    mean_b: float | None
    sd_a: float | None
    sd_b: float | None
    test: str
    p_value: float | None = None
    min_p: float | None = None
    difference: float | None = None
    """None when the test could not run ("cannot tell"); the key is then left out."""
    verdict: str = ""
    text: str = ""

    @model_serializer(mode="wrap")
    def _without_missing_difference(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if self.difference is None:
            data.pop("difference", None)
        return data


Comparison = Annotated[WorkerComparison | ArchitectureComparison, Field(discriminator="kind")]


class Summary(BaseModel):
    schema_version: int = Field(serialization_alias="schema")
    generated: str
    suites: list[str]
    results: int
    metrics: dict[str, str]
    """Each summary metric's meaning, in words."""
    workers: dict[str, WorkerSummary]
    architectures: dict[str, ArchitectureSummary]
    comparisons: list[Comparison]
    bfcl: BfclSummary | None = None
    """BFCL's leaderboard groups (`rolepool.evals.bfcl.groups`); the key is written only when
    BFCL categories ran."""
    decoding: DecodingSummary | None = None
    """Free vs constrained decoding (`rolepool.evals.decoding`); the key is written only when
    an eval ran both."""

    def to_json(self) -> str:
        """`summary.json`'s text."""
        data = self.model_dump(by_alias=True)
        if self.bfcl is None:
            data.pop("bfcl", None)
        if self.decoding is None:
            data.pop("decoding", None)
        return json.dumps(data, indent=1, ensure_ascii=False) + "\n"

"""PromQL as the tests read it: the metric names an expression uses, and the queries and
alert rules of docs/OBSERVABILITY.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.deploy_files import HISTOGRAM_SUFFIXES

DOC = Path(__file__).resolve().parents[1] / "docs" / "OBSERVABILITY.md"
RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "rules.yml"


PROMETHEUS_OWN = {"up"}  # series Prometheus writes itself, not a worker


KIND_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
}


PROMQL_WORDS = {
    # aggregation operators and keywords
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "inf",
    "nan",
    # functions
    "abs",
    "absent",
    "absent_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_quantile",
    "idelta",
    "increase",
    "irate",
    "label_replace",
    "label_join",
    "ln",
    "log2",
    "log10",
    "predict_linear",
    "rate",
    "resets",
    "round",
    "scalar",
    "sort",
    "sort_desc",
    "sqrt",
    "time",
    "timestamp",
    "vector",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "quantile_over_time",
    "stddev_over_time",
    "last_over_time",
    "present_over_time",
}


def promql_metric_names(expr: str) -> set[str]:
    """Identifiers of an expression that are neither PromQL words, labels nor variables."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', " ", expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables
    words = set(re.findall(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text))
    return {w for w in words if w.lower() not in PROMQL_WORDS}


def contract_base_name(series: str, metrics: dict[str, str]) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        base = series.removesuffix(suffix)
        if base != series and metrics.get(base) == "histogram":
            return base
    return series


def doc_block(lang: str, after: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    found = re.search(rf"```{lang}\n(.*?)```", text[text.index(after) :], re.S)
    assert found, f"no {lang} block after {after!r} in {DOC.name}"
    return found.group(1)


def doc_rules() -> dict[str, Any]:
    """The shipped alert rules, which docs/OBSERVABILITY.md documents."""
    rules: dict[str, Any] = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return rules


def doc_queries() -> list[str]:
    """The PromQL examples of docs/OBSERVABILITY.md and the shipped alert expressions."""
    lines = doc_block("promql", "## PromQL").splitlines()
    examples = [line for line in lines if line.strip() and not line.startswith("#")]
    alerts = [rule["expr"] for group in doc_rules()["groups"] for rule in group["rules"]]
    return examples + alerts

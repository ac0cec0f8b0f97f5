"""A synthetic customer-churn data set with named columns, monthly batches and drift knobs.

Rows are produced and written chunk by chunk, so tens of millions of rows never sit in
memory at once. Every chunk draws from its own generator seeded by (seed, month, chunk),
which makes a batch reproducible bit for bit.

Knobs:
- ``covariate_drift`` (0..1): shifts feature distributions (shorter tenure, higher prices,
  more month-to-month contracts) without changing how churn depends on them.
- ``concept_drift`` (0..2): changes how churn depends on the features (price and support
  calls matter more, tenure less) without changing the features. Up to 1 the old
  ranking mostly holds (a month-1 model loses 0.02-0.035 AUC); from about 1.7 on, tenure
  stops protecting customers at all, and at 2 a month-1 model loses about 0.08 AUC.
- ``label_noise`` (0..1): share of labels flipped at random; a model trained on noisy
  labels is a realistic "worse challenger".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

CONTRACTS = ["month_to_month", "one_year", "two_year"]
PLANS = ["basic", "standard", "premium"]
PAYMENTS = ["card", "bank_transfer", "electronic_check", "mailed_check"]
REGIONS = ["north", "south", "east", "west"]

COLUMNS = [
    "customer_id",
    "tenure_months",
    "monthly_charges",
    "total_charges",
    "support_calls",
    "age",
    "contract",
    "plan",
    "payment_method",
    "paperless_billing",
    "region",
    "churned",
]


@dataclass(frozen=True)
class ChurnConfig:
    rows: int = 10_000
    month: int = 1
    seed: int = 2026
    covariate_drift: float = 0.0
    concept_drift: float = 0.0
    label_noise: float = 0.0
    chunk_rows: int = 250_000

    def __post_init__(self) -> None:
        if self.rows < 0:
            raise ValueError("rows must be >= 0")
        if not 1 <= self.month <= 999:
            raise ValueError("month must be between 1 and 999")
        for knob, top in (("covariate_drift", 1.0), ("concept_drift", 2.0), ("label_noise", 1.0)):
            value = getattr(self, knob)
            if not 0.0 <= value <= top:
                raise ValueError(f"{knob} must be between 0 and {top:g}, got {value}")


def _chunk(cfg: ChurnConfig, index: int, start: int, size: int) -> pd.DataFrame:
    rng = np.random.default_rng([cfg.seed, cfg.month, index])
    cov = cfg.covariate_drift
    tenure = np.clip(rng.gamma(2.0, 14.0 * (1 - 0.5 * cov), size), 0, 120).round()
    contract = rng.choice(CONTRACTS, size, p=_mix([0.45, 0.30, 0.25], [0.75, 0.15, 0.10], cov))
    plan = rng.choice(PLANS, size, p=[0.5, 0.35, 0.15])
    base_price = np.select([plan == "basic", plan == "standard"], [35.0, 70.0], 110.0)
    monthly = np.clip(base_price * (1 + 0.35 * cov) + rng.normal(0, 12, size), 10, 250).round(2)
    total = (monthly * np.maximum(tenure, 1) * rng.uniform(0.9, 1.05, size)).round(2)
    support = rng.poisson(1.2 + 1.5 * cov, size).astype(float)
    age = np.clip(rng.normal(45, 15, size), 18, 95).round()
    payment = rng.choice(
        PAYMENTS, size, p=_mix([0.35, 0.25, 0.25, 0.15], [0.2, 0.2, 0.5, 0.1], cov)
    )
    paperless = rng.choice(["yes", "no"], size, p=[0.6, 0.4])
    region = rng.choice(REGIONS, size, p=[0.3, 0.25, 0.25, 0.2])

    con = cfg.concept_drift
    logit = (
        -1.2
        - (0.045 * (1 - 0.6 * con)) * tenure
        + (0.012 + 0.02 * con) * (monthly - 60)
        + (0.35 + 0.4 * con) * support
        + np.select([contract == "month_to_month", contract == "one_year"], [1.1, 0.1], -0.9)
        + np.where(payment == "electronic_check", 0.5, 0.0)
        + np.where((plan == "premium") & (support > 2), 0.8, 0.0)  # an interaction for trees
        + np.where(region == "south", 0.25 + 0.8 * con, 0.0)
        - 0.006 * (age - 45)
    )
    churned = (rng.random(size) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    if cfg.label_noise > 0:
        flip = rng.random(size) < cfg.label_noise
        churned = np.where(flip, 1 - churned, churned)
    # A few real-world gaps: new customers have no total yet.
    total = np.where((tenure == 0) & (rng.random(size) < 0.5), np.nan, total)
    ids = np.char.add(
        f"M{cfg.month:03d}-", np.char.zfill((np.arange(start, start + size)).astype(str), 9)
    )
    return pd.DataFrame(
        {
            "customer_id": ids,
            "tenure_months": tenure,
            "monthly_charges": monthly,
            "total_charges": total,
            "support_calls": support,
            "age": age,
            "contract": contract,
            "plan": plan,
            "payment_method": payment,
            "paperless_billing": paperless,
            "region": region,
            "churned": churned,
        }
    )


def _mix(base: list[float], drifted: list[float], amount: float) -> list[float]:
    probs = [(1 - amount) * b + amount * d for b, d in zip(base, drifted, strict=True)]
    total = sum(probs)
    return [p / total for p in probs]


def iter_chunks(cfg: ChurnConfig):
    start, index = 0, 0
    while start < cfg.rows:
        size = min(cfg.chunk_rows, cfg.rows - start)
        yield _chunk(cfg, index, start, size)
        start += size
        index += 1


def frame(cfg: ChurnConfig) -> pd.DataFrame:
    """The whole batch in memory (small batches: tests, examples, the traffic simulator)."""
    return pd.concat(list(iter_chunks(cfg)), ignore_index=True)


def write(cfg: ChurnConfig, out: str | os.PathLike[str]) -> Path:
    """Write one batch to ``out`` (.csv or .parquet) atomically; returns the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    writer = None
    try:
        for frame in iter_chunks(cfg):
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if writer is None:
                writer = _open_writer(out.suffix, tmp, table.schema)
            writer.write_table(table)
        if writer is None:  # zero rows: still write a header-only file
            table = pa.Table.from_pandas(_chunk(cfg, 0, 0, 0), preserve_index=False)
            writer = _open_writer(out.suffix, tmp, table.schema)
        writer.close()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def _open_writer(suffix: str, path: Path, schema: pa.Schema):
    if suffix == ".parquet":
        return pq.ParquetWriter(path, schema)
    if suffix == ".csv":
        options = pacsv.WriteOptions(quoting_style="needed")
        return pacsv.CSVWriter(path, schema, write_options=options)
    raise ValueError(f"{path}: unsupported output type {suffix!r}; use .csv or .parquet")

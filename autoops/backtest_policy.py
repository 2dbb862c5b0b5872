"""The backtest's retrain policies: what each one is, and its decision at one month.

``static`` never retrains; ``periodic_kK`` retrains when its model has served K months (the
calendar, K = 1..6, is always replayed: a trigger means something only next to the habit it must
beat); ``data_drift``, ``performance`` and ``auto`` decide from the month's figures, ``auto`` with
the product's own rule (``core.trigger.decide``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from core.drift import performance_drift
from core.io import StageError
from core.params import DriftParams, policy_spec
from core.trigger import decide as trigger_decision

PolicyKind = Literal["static", "periodic", "data_drift", "performance", "auto"]
BASELINE = "periodic_k1"
STATIC = "static"
# The calendar frontier: retrain every K months for K = 1..6, always replayed so that any trigger
# is judged against the habit it must beat at the same number of retrains.
CALENDAR = tuple(range(1, 7))


@dataclass(frozen=True)
class Policy:
    name: str
    kind: PolicyKind
    every: int = 0  # periodic only

    @property
    def needs_drift(self) -> bool:
        return self.kind in ("data_drift", "auto")

    @property
    def needs_gain(self) -> bool:
        return self.kind == "auto"

    @property
    def description(self) -> str:
        return {
            "static": "train once on the first month, never retrain",
            "periodic": f"retrain every {self.every} month{'s' if self.every > 1 else ''}",
            "data_drift": "retrain when Evidently's data-drift verdict fires (drift.drift_share)",
            "performance": "retrain when MAE exceeds the reference MAE by drift.performance_threshold",
            "auto": "the product's trigger: data drift OR expected retrain gain (core.trigger.decide)",
        }[self.kind]


def parse_policies(specs: list[str], periodic_every: int) -> list[Policy]:
    """Policies from specs (``static``, ``periodic``, ``periodic:K``, ``data_drift``, ...).

    ``static`` and the calendar ``periodic_k1``..``periodic_k6`` are always included: degradation
    is measured against ``periodic_k1`` and its reduction against ``static``, and a trigger means
    something only next to the calendar it must beat.
    """
    policies: dict[str, Policy] = {STATIC: Policy(STATIC, "static")}
    for k in CALENDAR:
        policies[f"periodic_k{k}"] = Policy(f"periodic_k{k}", "periodic", k)
    for spec in specs:
        try:
            kind, every = policy_spec(spec)
        except ValueError as exc:
            raise StageError(str(exc)) from exc
        if kind == "periodic":
            name = f"periodic_k{every}" if every else "periodic"
            policy = Policy(name, "periodic", every or periodic_every)
        else:
            policy = Policy(kind, kind)  # type: ignore[arg-type]
        policies.setdefault(policy.name, policy)
    return list(policies.values())


def decide(
    policy: Policy,
    age: int,
    reference_mae: float,
    mae: float,
    drift: dict[str, Any] | None,
    gain: dict[str, Any] | None,
    params: DriftParams,
) -> tuple[bool, str, dict[str, Any]]:
    """Retrain or not, why, and the performance-drift figures (shared by every policy's record)."""
    evaluation = {"reference_holdout": {"mae": reference_mae}, "current": {"mae": mae}}
    perf = performance_drift(evaluation, params.performance_threshold)
    if policy.kind == "static":
        return False, "static: never retrains", perf
    if policy.kind == "periodic":
        if age >= policy.every:
            return True, f"periodic: the model has served {age} month(s) (retrain every {policy.every})", perf
        return False, f"periodic: the model has served {age} of {policy.every} month(s)", perf
    if policy.kind == "performance":
        change = f"MAE {mae:.3f} vs reference {reference_mae:.3f} ({perf['mae_change']:+.1%}"
        if perf["performance_drift"]:
            return True, f"performance drift: {change} > {params.performance_threshold:+.0%})", perf
        return False, f"no performance drift: {change} <= {params.performance_threshold:+.0%})", perf
    assert drift is not None
    # data_drift and auto are the product's own decision, with data drift alone or with the gain.
    retrain, reason = trigger_decision(drift, gain if policy.needs_gain else None, params.min_retrain_gain)
    return retrain, reason, perf

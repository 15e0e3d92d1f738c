"""Experiment plans (methods × ratios × recovery), their runner, the SQLite result store, criteria,
the Pareto front and the ranking that names the best run in plain words; one job per module:

- criteria: the metric catalogue and the criteria runs are ranked by;
- typed: plan values checked against the annotations of what consumes them;
- store: run records and the SQLite store (marked, refused when foreign);
- claims: who computes a run in a shared store, its lease, and whether its owner lives;
- plans: the TOML model of an experiment;
- runner: run_plan and its events (claims, the memory budget per run, resuming);
- executors: where the runs execute, here or on a Ray cluster (the driver keeps the store either way);
- ranking: the Pareto front, the ranking and the recommendation.

A plan is plain data (a TOML file or the GUI's Experiment tab); `run_plan` turns it into one
`PruneConfig` per run, evaluates the original model once, runs every pending configuration through
`engine.pruning.run_pruning` and writes each finished run to the store in its own transaction, so an
interrupted plan loses at most the run in progress and a restart skips what is already stored.
"""
from engine.experiments.criteria import (CRITERION_KEYS, Criterion, DEFAULT_CRITERIA, METRICS, MetricInfo,
                                         criteria_from_toml, metric_value)
from engine.experiments.typed import (check_prune_options, check_sensitivity_options, check_typed)
from engine.experiments.claims import ClaimStatus
from engine.experiments.store import (APPLICATION_ID, Claim, ClaimOwner, LEASE_S, OUR_TABLES, RENEW_S, RUN_COLUMNS,
                                      ResultStore, RunKind, RunResult, SCHEMA_VERSION, SQLITE_MAGIC, STORE_NAME,
                                      claim_is_live, default_store_path, inspect_store_file, owner_alive, run_label)
from engine.experiments.plans import (PLAN_SECTIONS, Plan, RECOVERY_KEYS, Recovery, load_plan, parse_plan)
from engine.experiments.ranking import (RankedRun, Ranking, TIMED_METRICS, describe_gain, pareto_front, rank,
                                        recommendation)
from engine.experiments.executors import (LocalExecutor, Outcome, PlannedRun, RayExecutor, RemoteEvent, RemoteReply,
                                          RunStatus, make_executor)
from engine.experiments.runner import (POLL_S, PlanDone, PlanProgress, PlanRunDone, PlanRunFailed, PlanRunStarted,
                                       PlanStarted, PlanWaiting, baseline_key, load_inputs, plan_runs, run_key, run_plan,
                                       sensitivity_for_plan)
from engine.experiments.runner import apply_final_round, latency_source_text, same_arch_text

__all__ = [
    "APPLICATION_ID", "CRITERION_KEYS", "Claim", "ClaimOwner", "ClaimStatus", "Outcome", "PlannedRun", "RemoteEvent",
    "RemoteReply", "RunKind", "RunStatus", "Criterion", "DEFAULT_CRITERIA", "LEASE_S", "METRICS",
    "LocalExecutor", "MetricInfo", "OUR_TABLES", "PLAN_SECTIONS", "POLL_S", "Plan", "PlanDone", "PlanProgress",
    "PlanRunDone", "PlanRunFailed", "PlanRunStarted", "PlanStarted", "PlanWaiting", "RECOVERY_KEYS", "RENEW_S",
    "RUN_COLUMNS", "RankedRun", "Ranking", "RayExecutor", "make_executor",
    "Recovery", "ResultStore", "RunResult", "SCHEMA_VERSION", "SQLITE_MAGIC", "STORE_NAME", "TIMED_METRICS",
    "baseline_key", "check_prune_options", "check_sensitivity_options", "check_typed", "claim_is_live",
    "criteria_from_toml", "default_store_path", "describe_gain", "inspect_store_file", "load_inputs", "load_plan",
    "metric_value", "owner_alive", "pareto_front", "parse_plan", "plan_runs", "rank", "recommendation", "run_key",
    "run_label", "run_plan", "sensitivity_for_plan", "apply_final_round", "latency_source_text", "same_arch_text",
]

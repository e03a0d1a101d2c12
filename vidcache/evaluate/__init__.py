"""Batch re-evaluation: many checkpoints x datasets x probes -> one cached, resumable results table."""

from vidcache.evaluate.checkpoints import CheckpointRef, resolve_checkpoints, step_from_name
from vidcache.evaluate.plan import Plan, load_plan, parse_plan, plan_from_flags
from vidcache.evaluate.prune import PruneItem, prune
from vidcache.evaluate.report import collect_rows, make_plots, rows_table, write_results
from vidcache.evaluate.run import run_plan, run_plan_distributed, run_plan_multi_gpu
from vidcache.evaluate.watch import watch

__all__ = ["Plan", "load_plan", "parse_plan", "plan_from_flags", "run_plan", "run_plan_multi_gpu",
           "run_plan_distributed", "watch", "prune", "PruneItem", "collect_rows", "write_results", "make_plots",
           "rows_table", "CheckpointRef", "resolve_checkpoints", "step_from_name"]

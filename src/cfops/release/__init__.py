"""`cfops release`: release pipelines — ordered steps, a failure policy, one report.

One module per job (the layers are checked by `nox -s lint`): ``model`` (the typed state: options, what a
run learns, steps and their results), ``smoke`` (the steps that judge a version: canary, stage smokes,
analysis), ``stages`` (the three pipelines as data), ``runner`` (running the steps; the rollback on a
failure), ``report`` (release.json and release.md), ``command`` (checks before a start, the journal and
lock of a production or proxy release, the command line). The command's own docstring describes the pipelines.
"""

from __future__ import annotations

from cfops.release.command import (
    journal_worker,
    main,
    prepare,
    refuse_unfinished,
    release,
    run_pipeline,
    target_name,
)
from cfops.release.model import (
    NEW,
    OLD,
    PIPELINES,
    SYMBOL,
    Context,
    Options,
    Pipeline,
    ReleaseState,
    Skip,
    Status,
    Step,
    StepFailed,
    StepResult,
    cfops,
    shown,
)
from cfops.release.report import REPORT_JSON, REPORT_MD, analysis_table, markdown, summarize, write_report
from cfops.release.runner import execute, rollback_command
from cfops.release.smoke import LOCAL_POINTS, analysis_step, canary_step, smoke_step
from cfops.release.stages import STEPS, local_steps, production_steps, proxy_steps, split_step, stage_steps

__all__ = [
    "LOCAL_POINTS",
    "NEW",
    "OLD",
    "PIPELINES",
    "REPORT_JSON",
    "REPORT_MD",
    "STEPS",
    "SYMBOL",
    "Context",
    "Options",
    "Pipeline",
    "ReleaseState",
    "Skip",
    "Status",
    "Step",
    "StepFailed",
    "StepResult",
    "analysis_step",
    "analysis_table",
    "canary_step",
    "cfops",
    "execute",
    "journal_worker",
    "local_steps",
    "main",
    "markdown",
    "prepare",
    "production_steps",
    "proxy_steps",
    "refuse_unfinished",
    "release",
    "rollback_command",
    "run_pipeline",
    "shown",
    "smoke_step",
    "split_step",
    "stage_steps",
    "summarize",
    "target_name",
    "write_report",
]

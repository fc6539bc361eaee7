"""The stage registry: every stage names the tables it reads and writes, so a run can check its
inputs before any Spark work and say which stage to run first."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from querylens.runtime.errors import ConfigError, StageInputError
from querylens.runtime.runs import Run
from querylens.runtime.tables import table_exists

log = logging.getLogger("querylens")


@dataclass(frozen=True)
class Stage:
    """A stage: its function and the catalog tables it needs (`reads`), may use (`uses`) and
    writes. A stage reads its inputs from tables only, so it can run in its own process.
    `skip` says why the stage does not apply to a run (None when it does), from the run's
    facts alone."""

    name: str
    run: Callable[[Run], None]
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    skip: Callable[[Run], str | None] | None = None

    def skip_reason(self, run: Run) -> str | None:
        return self.skip(run) if self.skip is not None else None

    def execute(self, run: Run) -> None:
        """Run the stage, or record `{"skipped": reason}` as its facts and write nothing.

        Either way the run's rows of every table in `writes` that the stage did not write
        this time are removed (`Run.finish_writes`), so a rerun leaves no stale rows."""
        reason = self.skip_reason(run)
        run.begin_writes()
        if reason is None:
            self.run(run)
        else:
            log.warning("[%s] %s: skipped: %s", run.run_id, self.name, reason)
            run.facts[self.name] = {"skipped": reason}
        run.finish_writes(self.name, self.writes)


def without_interactions(run: Run) -> str | None:
    """A `Stage.skip` for stages that need interactions: why, when ingest found none."""
    if run.facts.get("ingest", {}).get("interactions", True):
        return None
    return "input has no interaction columns (clicks, add_to_bags, purchases)"


class StageRegistry:
    """Stages by name, in the order the full pipeline runs them (`pipeline`)."""

    def __init__(self, stages: Iterable[Stage] = (), pipeline: Iterable[str] | None = None):
        self._stages: dict[str, Stage] = {}
        for stage in stages:
            self.register(stage)
        self.pipeline = tuple(pipeline) if pipeline is not None else tuple(self._stages)

    def register(self, stage: Stage) -> Stage:
        if stage.name in self._stages:
            raise ValueError(f"stage {stage.name!r} is registered twice")
        self._stages[stage.name] = stage
        return stage

    def with_stage(self, stage: Stage) -> StageRegistry:
        """A copy with `stage` in place of the registered stage of the same name."""
        return StageRegistry([stage if s.name == stage.name else s for s in self], self.pipeline)

    def __getitem__(self, name: str) -> Stage:
        if name not in self._stages:
            raise ConfigError(f"unknown stage {name!r}; stages: {', '.join(self._stages)}")
        return self._stages[name]

    def __contains__(self, name: object) -> bool:
        return name in self._stages

    def __iter__(self) -> Iterator[Stage]:
        return iter(self._stages.values())

    def writers(self, table: str) -> list[str]:
        """Names of the stages that write `table`."""
        return [s.name for s in self if table in s.writes]


def check_inputs(run: Run, stages: list[Stage], registry: StageRegistry) -> None:
    """Raise `StageInputError` naming the first table a stage reads that neither an earlier stage
    of `stages` writes nor a completed stage of this run wrote, and the stage that writes it.
    A stage that the run's facts already skip needs nothing and writes nothing."""
    planned: set[str] = set()
    done = set(run.timings)
    for stage in stages:
        if stage.skip_reason(run) is not None:
            continue
        for table in stage.reads:
            writers = registry.writers(table)
            if table in planned or (done & set(writers) and table_exists(
                    run.spark, run.database, table)):
                continue
            first = " or ".join(writers) or "another job"
            raise StageInputError(
                f"stage {stage.name} needs table {run.database}.{table} for run {run.run_id}, "
                f"which has none: run the {first} stage first "
                f"(querylens {writers[0] if writers else '<job>'} --run-id {run.run_id})")
        planned.update(stage.writes)

"""The ingest stage: search logs -> `queries`, with every dropped row counted in the manifest."""

from __future__ import annotations

from dataclasses import asdict

from querylens.ingest.aggregate import ingest
from querylens.runtime.runs import Run
from querylens.runtime.stages import Stage


def ingest_stage(run: Run) -> None:
    """Search logs -> `queries`."""
    queries, stats = ingest(run.spark, run.config.input, run.config.normalize)
    run.facts["ingest"] = asdict(stats)
    run.write("queries", queries)
    queries.unpersist()


INGEST = Stage("ingest", ingest_stage, writes=("queries",))

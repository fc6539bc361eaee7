"""Issue #15 scale targets, timed step by step on this machine.

1. mining (`--events N`): N demo events generated to Parquet (not timed), then what the
   recommend stage does with them: read, normalise, fold typing fragments
   (`session_searches`), mine the reformulation pairs (`mine_reformulations`, a window over
   sessions) and write them as Parquet;
2. lexical (`--queries M --candidates C`): the lexical source for M failing queries against C
   recommendable queries (distinct demo-vocabulary texts, `samples.fashion_queries`): the index
   built on the driver, `lexical_df` over a Spark DataFrame of M rows in `mapInPandas`, written
   as Parquet.

    .venv/bin/python bench/recommend_scale.py --events 2000000 --queries 200000 --candidates 20000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd
from pyspark.sql import functions as F

from demo_setup import demo_config
from querylens.demo.ground_truth import write_demo_logs
from querylens.demo.samples import fashion_queries
from querylens.recommend.lexical import build_lexical_index, lexical_df
from querylens.recommend.reformulations import mine_reformulations, session_searches
from querylens.runtime.session import build_session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=0)
    parser.add_argument("--queries", type=int, default=0)
    parser.add_argument("--candidates", type=int, default=20_000)
    parser.add_argument("--root", default=None)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    root = Path(args.root or tempfile.mkdtemp(prefix="recommend-scale-"))
    config = demo_config(root, [f"generate.n_events={max(args.events, 1)}", *args.overrides])
    spark = build_session(config)
    times: dict[str, float] = {}
    facts: dict[str, int] = {}
    if args.events:
        start = time.perf_counter()
        write_demo_logs(spark, config)
        times["generate (not counted)"] = time.perf_counter() - start
        start = time.perf_counter()
        searches = session_searches(spark, config)
        pairs = mine_reformulations(searches, config.input.reformulation_seconds)
        pairs.write.mode("overwrite").parquet(str(root / "pairs"))
        times["mine reformulations"] = time.perf_counter() - start
        facts["pairs"] = spark.read.parquet(str(root / "pairs")).count()
    if args.queries:
        texts = fashion_queries(args.queries + args.candidates, seed=7)
        pool = pd.DataFrame({"key": [f"c{i}" for i in range(args.candidates)],
                             "text": texts[:args.candidates]})
        start = time.perf_counter()
        index = build_lexical_index(pool["key"], pool["text"])
        assert index is not None
        times["lexical index"] = time.perf_counter() - start
        targets = spark.createDataFrame(pd.DataFrame(
            {"query_key": [f"q{i}" for i in range(args.queries)],
             "query": texts[args.candidates:]})).repartition(spark.sparkContext.defaultParallelism)
        targets = targets.cache()
        targets.count()
        start = time.perf_counter()
        lexical, handle = lexical_df(targets, index, config.recommend.candidates_per_source,
                                     config.recommend.min_lexical_similarity)
        lexical.write.mode("overwrite").parquet(str(root / "lexical"))
        times["lexical source"] = time.perf_counter() - start
        handle.destroy()
        got = spark.read.parquet(str(root / "lexical")).agg(
            F.count("*").alias("rows"), F.countDistinct("query_key").alias("served")).first()
        assert got is not None
        facts.update(lexical_rows=int(got["rows"]), lexical_served=int(got["served"]))
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f}; master {spark.sparkContext.master}")
    print(json.dumps({"events": args.events, "queries": args.queries,
                      "candidates": args.candidates, **facts,
                      "seconds": {k: round(v, 1) for k, v in times.items()}}, indent=1))


if __name__ == "__main__":
    main()

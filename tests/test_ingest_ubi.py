"""UBI as OpenSearch ships it: one bulk file with both indexes, several documents per search,
events for unknown searches, mixed applications, typing fragments and three timestamp forms,
each checked against counts computed here in plain Python."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from querylens.ingest.aggregate import IngestStats, ingest
from querylens.runtime.config import Config, load_config

START = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
APPLICATIONS = ("simulated", "demo-shop", "synthetic")
WORDS = ["linen shirt", "red dress", "wool coat", "chelsea boots", "silk scarf", "denim jacket",
         "running shoes", "leather bag", "summer hat", "black jeans"]
TYPED = ["wi", "wirel", "wirele", "wireles", "wireless earb", "wireless earbuds"]
FORMS = ("iso", "offset", "millis")


@dataclass
class Search:
    query_id: str
    text: str
    client: str
    session: str
    application: str
    at: datetime
    documents: int = 1
    other_text: str | None = None
    events: list[tuple[str, float | None]] = field(default_factory=list)


def stamp(at: datetime, form: str) -> str | int:
    if form == "millis":
        return int(at.timestamp() * 1000)
    iso = at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}"
    return iso + ("Z" if form == "iso" else "+0000")


def build_searches(rng: random.Random) -> list[Search]:
    searches = []
    for i in range(60):
        at = START + timedelta(minutes=7 * i)
        searches.append(Search(
            f"q{i}", rng.choice(WORDS), f"c{i % 9}", f"s{i % 9}-{i // 20}",
            APPLICATIONS[i % 3], at, documents=rng.choice([1, 1, 1, 3, 6]),
        ))
    searches[4].documents, searches[4].other_text = 3, "red dresses"
    searches[10].documents, searches[10].other_text = 6, "wool coats"
    for search in searches:
        for _ in range(rng.randint(0, 4)):
            search.events.append(("impression", float(rng.randint(1, 20))))
        for _ in range(rng.randint(0, 3)):
            search.events.append(("click", rng.choice([None, float(rng.randint(1, 10))])))
        if rng.random() < 0.3:
            search.events.append(("add_to_cart", None))
        if rng.random() < 0.3:
            search.events.append(("product_hover", None))
    typing = START + timedelta(days=2)
    for j, text in enumerate(TYPED):
        searches.append(Search(f"t{j}", text, "typist", "typist-s", "demo-shop",
                               typing + timedelta(seconds=2 * j)))
    searches[-1].events += [("impression", 1.0), ("click", 2.0)]
    searches[-3].events.append(("impression", 3.0))
    slow = START + timedelta(days=3)
    searches.append(Search("slow0", "red", "slowpoke", "slow-s", "synthetic", slow))
    searches.append(Search("slow1", "red dress", "slowpoke", "slow-s", "synthetic",
                           slow + timedelta(minutes=5), events=[("click", 1.0)]))
    return searches


def bulk_lines(searches: list[Search], rng: random.Random) -> tuple[list[str], Counter]:
    """The bulk file: each document after its action line, queries and events interleaved;
    also unknown and null query_ids, another index, a malformed line and blank lines."""
    docs: list[tuple[str, dict]] = []
    for n, s in enumerate(searches):
        for d in range(s.documents):
            text = s.other_text if (s.other_text and d == s.documents - 1) else s.text
            doc = {"query_id": s.query_id, "user_query": text, "client_id": s.client,
                   "application": s.application,
                   "timestamp": stamp(s.at + timedelta(milliseconds=d), FORMS[(n + d) % 3]),
                   "query_response_hit_ids": ["p1", "p2"]}
            docs.append(("ubi_queries", doc))
        for e, (action, position) in enumerate(s.events):
            event = {"action_name": action, "query_id": s.query_id, "client_id": s.client,
                     "session_id": s.session, "message_type": "INFO",
                     "timestamp": stamp(s.at + timedelta(seconds=1 + e), FORMS[e % 3])}
            if position is not None:
                event["event_attributes"] = {"object": {"object_id": f"p{e}"},
                                             "position": {"ordinal": position}}
            docs.append(("ubi_events", event))
    orphans = Counter()
    for k in range(25):
        action = ["purchase", "click", "add_to_cart"][k % 3]
        query_id = None if k % 5 == 0 else f"gone{k}"
        event = {"action_name": action, "query_id": query_id, "session_id": f"x{k}",
                 "timestamp": stamp(START, "iso")}
        if query_id is None:
            event.pop("query_id")
        docs.append(("ubi_events", event))
        orphans["null" if query_id is None else "unknown"] += 1
    docs.append(("products", {"product_id": "p1", "title": "linen shirt"}))
    rng.shuffle(docs)
    lines = []
    for i, (index, doc) in enumerate(docs):
        verb = "create" if i % 17 == 0 else "index"
        lines += [json.dumps({verb: {"_index": index, "_id": str(i)}}), json.dumps(doc)]
        if i == 40:
            action = json.dumps({"index": {"_index": "ubi_events"}})
            lines += ["", action, '{"query_id": "q1", "act']
            orphans["bad"] += 1
    return lines, orphans


def expected_queries(searches: list[Search], applications: set[str] | None, seconds: float
                     ) -> tuple[dict[str, dict], int]:
    """Per query text: searches, clicks, add-to-bags, impressions, searches with a click and
    the mean click position, with typing fragments folded the plain way; and the fragments."""
    kept = [s for s in searches if applications is None or s.application in applications]
    by_client = defaultdict(list)
    for s in kept:
        by_client[s.client].append(s)
    target: dict[str, Search] = {}
    fragments = 0
    for chain in by_client.values():
        chain.sort(key=lambda s: (s.at, len(s.text)))
        for s in chain:
            target[s.query_id] = s
        for i in range(len(chain) - 2, -1, -1):
            s, nxt = chain[i], chain[i + 1]
            acted = any(a in ("click", "add_to_cart", "purchase") for a, _ in s.events)
            if (seconds > 0 and not acted and nxt.text != s.text and nxt.text.startswith(s.text)
                    and (nxt.at - s.at).total_seconds() <= seconds):
                target[s.query_id] = target[nxt.query_id]
                fragments += 1
    out: dict[str, dict] = defaultdict(lambda: Counter())
    positions: dict[str, list[float]] = defaultdict(list)
    for s in kept:
        row = out[target[s.query_id].text]
        row["n_searches"] += target[s.query_id] is s
        actions = Counter(a for a, _ in s.events)
        row["clicks"] += actions["click"]
        row["add_to_bags"] += actions["add_to_cart"]
        row["impressions"] += actions["impression"]
        row["searches_with_click"] += target[s.query_id] is s and actions["click"] > 0
        positions[target[s.query_id].text] += [p for a, p in s.events if a == "click" and p]
    for text, row in out.items():
        row["mean_click_position"] = (sum(positions[text]) / len(positions[text])
                                      if positions[text] else None)
    return dict(out), fragments


@pytest.fixture(scope="module")
def bulk(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Search], Counter]:
    rng = random.Random(13)
    searches = build_searches(rng)
    lines, orphans = bulk_lines(searches, rng)
    path = tmp_path_factory.mktemp("ubi") / "ubi-sample.ndjson"
    path.write_text("\n".join(lines) + "\n")
    return path, searches, orphans


def ubi_config(base: Config, path: Path, *sets: str) -> Config:
    return load_config(None, [f"run.warehouse_dir={base.run.warehouse_dir}",
                              f"run.metastore_dir={base.run.metastore_dir}",
                              "input.format=ubi", f"input.ubi_queries_path={path}",
                              f"input.ubi_events_path={path}", *sets])


def check_against_plain_python(spark: SparkSession, config: Config, searches: list[Search],
                               applications: set[str] | None) -> IngestStats:
    queries, stats = ingest(spark, config.input, config.normalize)
    rows = {r["query"]: r.asDict() for r in queries.collect()}
    expected, fragments = expected_queries(searches, applications,
                                           config.input.typing_fragment_seconds)
    assert set(rows) == set(expected)
    for text, want in expected.items():
        got = rows[text]
        for column in ("n_searches", "clicks", "add_to_bags", "impressions",
                       "searches_with_click"):
            assert got[column] == want[column], (text, column)
        assert got["purchases"] == 0
        if want["mean_click_position"] is None:
            assert got["mean_click_position"] is None
        else:
            assert got["mean_click_position"] == pytest.approx(want["mean_click_position"])
    assert stats.typing_fragments == fragments
    assert stats.queries == len(expected)
    return stats


def test_bulk_file_with_both_indexes(spark: SparkSession, config: Config, bulk) -> None:
    path, searches, orphans = bulk
    stats = check_against_plain_python(spark, ubi_config(config, path), searches, None)
    documents = sum(s.documents for s in searches)
    events = sum(len(s.events) for s in searches)
    ubi = stats.ubi
    assert ubi["documents_by_index"] == {"ubi_queries": documents,
                                         "ubi_events": events + 25 + orphans["bad"],
                                         "products": 1}
    assert ubi["duplicate_query_documents"] == documents - len(searches)
    assert ubi["query_ids_with_conflicting_texts"] == 2
    assert ubi["searches_by_application"] == dict(Counter(s.application for s in searches))
    assert stats.malformed_lines == {"input.ubi_events_path": orphans["bad"]}
    assert stats.ledger == {
        "read": documents, "kept": len(searches) - stats.typing_fragments, "bad_rows": 0,
        "duplicate_query_documents": documents - len(searches), "filtered_application": 0,
        "blank_query": 0, "typing_fragment": len(TYPED) - 1,
    }
    assert ubi["events"] == {
        "read": events + 25 + orphans["bad"], "attributed": events, "bad_rows": orphans["bad"],
        "null_query_id": orphans["null"], "unknown_query_id": orphans["unknown"],
        "filtered_application": 0, "blank_query": 0,
    }
    assert stats.invalid_timestamps == 0


def test_one_application_selected(spark: SparkSession, config: Config, bulk) -> None:
    path, searches, _ = bulk
    cfg = ubi_config(config, path, "input.ubi_applications=[demo-shop]")
    stats = check_against_plain_python(spark, cfg, searches, {"demo-shop"})
    left_out = [s for s in searches if s.application != "demo-shop"]
    assert stats.ledger["filtered_application"] == len(left_out)
    assert stats.ubi["events"]["filtered_application"] == sum(len(s.events) for s in left_out)
    assert stats.ledger["read"] == sum(s.documents for s in searches)


def test_typing_fragments_kept_apart_when_disabled(spark: SparkSession, config: Config,
                                                   bulk) -> None:
    path, searches, _ = bulk
    cfg = ubi_config(config, path, "input.typing_fragment_seconds=0")
    stats = check_against_plain_python(spark, cfg, searches, None)
    assert stats.typing_fragments == 0 and "wi" in {s.text for s in searches}


def test_separate_files_without_action_lines(spark: SparkSession, config: Config,
                                             tmp_path: Path) -> None:
    searches = build_searches(random.Random(5))[:20]
    queries_path, events_path = tmp_path / "queries.ndjson", tmp_path / "events.ndjson"
    queries_path.write_text("".join(
        json.dumps({"query_id": s.query_id, "user_query": s.text, "client_id": s.client,
                    "timestamp": stamp(s.at, "offset")}) + "\n" for s in searches))
    events_path.write_text("".join(
        json.dumps({"action_name": a, "query_id": s.query_id, "session_id": s.session,
                    "timestamp": stamp(s.at, "millis")}) + "\n"
        for s in searches for a, _ in s.events))
    cfg = load_config(None, [f"run.warehouse_dir={config.run.warehouse_dir}",
                             f"run.metastore_dir={config.run.metastore_dir}",
                             "input.format=ubi", f"input.ubi_queries_path={queries_path}",
                             f"input.ubi_events_path={events_path}"])
    queries, stats = ingest(spark, cfg.input, cfg.normalize)
    expected, _ = expected_queries(searches, None, 10)
    got = {r["query"]: (r["n_searches"], r["clicks"], r["n_sessions"]) for r in queries.collect()}
    sessions = defaultdict(set)
    for s in searches:
        if s.events:
            sessions[s.text].add(s.session)
        else:
            sessions[s.text].add(s.client)
    assert got == {t: (e["n_searches"], e["clicks"], len(sessions[t])) for t, e in expected.items()}
    assert stats.ubi["documents_by_index"] == {
        "ubi_queries": 20, "ubi_events": sum(len(s.events) for s in searches)}


def test_timestamps_in_three_forms(spark: SparkSession, config: Config, tmp_path: Path) -> None:
    at = datetime(2026, 10, 1, 9, 30, 15, 250_000, tzinfo=UTC)
    path = tmp_path / "q.ndjson"
    path.write_text("".join(json.dumps({"query_id": f"q{i}", "user_query": f"coat {i}",
                                        "timestamp": stamp(at, form)}) + "\n"
                            for i, form in enumerate(FORMS)) +
                    json.dumps({"query_id": "q9", "user_query": "coat 9",
                                "timestamp": int(at.timestamp())}) + "\n" +
                    json.dumps({"query_id": "q8", "user_query": "coat 8",
                                "timestamp": "yesterday"}) + "\n")
    events = tmp_path / "e.ndjson"
    events.write_text(json.dumps({"query_id": "q0", "action_name": "click"}) + "\n")
    cfg = ubi_config(config, path, f"input.ubi_events_path={events}")
    queries, stats = ingest(spark, cfg.input, cfg.normalize)
    seen = {r["query"]: r["first_seen"] for r in queries.collect()}
    naive = at.replace(tzinfo=None)
    assert seen == {"coat 0": naive, "coat 1": naive, "coat 2": naive,
                    "coat 9": naive.replace(microsecond=0), "coat 8": None}
    assert stats.invalid_timestamps == 1


def test_events_attributed_by_their_own_text(spark: SparkSession, config: Config,
                                             tmp_path: Path) -> None:
    queries = [{"query_id": "q1", "user_query": "linen shirt", "client_id": "c1",
                "timestamp": stamp(START, "iso")}]
    events = [
        {"query_id": "q1", "action_name": "click", "session_id": "s1"},
        *[{"query_id": "gone", "user_query": "silk scarf", "action_name": a, "session_id": "s2",
           "timestamp": stamp(START + timedelta(seconds=i), "millis")}
          for i, a in enumerate(["impression", "click", "purchase"])],
        *[{"user_query": "linen shirt", "action_name": "purchase", "session_id": s}
          for s in ("s3", "s3", "s4")],
        {"query_id": "gone", "action_name": "purchase", "session_id": "s2"},
        {"action_name": "click", "session_id": "s5", "user_query": "  "},
    ]
    q_path, e_path = tmp_path / "q.ndjson", tmp_path / "e.ndjson"
    q_path.write_text("".join(json.dumps(d) + "\n" for d in queries))
    e_path.write_text("".join(json.dumps(d) + "\n" for d in events))
    sets = ["input.format=ubi", f"input.ubi_queries_path={q_path}",
            f"input.ubi_events_path={e_path}"]
    for by_text in (False, True):
        cfg = ubi_config(config, q_path, *sets, f"input.ubi_attribute_by_text={by_text}")
        rows, stats = ingest(spark, cfg.input, cfg.normalize)
        got = {r["query"]: (r["n_searches"], r["clicks"], r["purchases"], r["impressions"])
               for r in rows.collect()}
        ledger = stats.ubi["events"]
        if not by_text:
            assert got == {"linen shirt": (1, 1, 0, 0)}
            assert (ledger["attributed"], ledger["unknown_query_id"],
                    ledger["null_query_id"]) == (1, 4, 4)
            continue
        assert got == {"linen shirt": (3, 1, 3, 0), "silk scarf": (1, 1, 1, 1)}
        assert (stats.ubi["events_attributed_by_text"], stats.ubi["searches_from_events"]) \
            == (6, 3)
        assert (ledger["attributed"], ledger["unknown_query_id"],
                ledger["null_query_id"]) == (7, 1, 1)
        assert ledger["read"] == len(events)
        assert stats.ledger["read"] == 1 + 3 and stats.ledger["kept"] == 4

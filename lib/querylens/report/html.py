"""One self-contained HTML report: run summary, figures (base64) and the cluster atlas."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from html import escape
from typing import Any

import pandas as pd

from querylens.report.data import ReportData, few_labels
from querylens.report.figures import RenderedFigure, cluster_names

SECTIONS = [
    ("clusters", "Clusters at a glance"),
    ("atlas", "Cluster atlas"),
    ("model", "Success model"),
    ("choice", "How the clustering was chosen"),
    ("run", "Run details"),
]

CSS = """
:root{--ink:#1d2330;--muted:#5b6475;--line:#e2e5eb;--bg:#f6f7f9;--blue:#0072B2;
--orange:#E69F00;--verm:#D55E00;--green:#009E73}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
sans-serif;color:var(--ink);background:var(--bg)}header{background:#1d2330;color:#fff;
padding:18px 32px}header h1{margin:0;font-size:22px}header p{margin:4px 0 0;color:#c9cfdb}
nav{position:sticky;top:0;z-index:5;background:#fff;border-bottom:1px solid var(--line);
padding:8px 32px}nav a{margin-right:18px;color:var(--blue);text-decoration:none;font-weight:600}
main{max-width:1380px;margin:0 auto;padding:8px 32px 48px}section{margin-top:28px}
h2{font-size:19px;border-bottom:2px solid var(--line);padding-bottom:4px}
.tiles{display:flex;flex-wrap:wrap;gap:12px;margin-top:18px}.tile{background:#fff;
border:1px solid var(--line);border-radius:8px;padding:10px 16px;min-width:150px}
.tile b{display:block;font-size:22px}.tile span{color:var(--muted);font-size:12px}
figure{background:#fff;border:1px solid var(--line);border-radius:8px;margin:14px 0;
padding:12px}figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{color:var(--muted);font-size:13px;margin-top:6px}.na{background:#fff7e6;
border-left:4px solid var(--orange);padding:8px 12px;border-radius:4px;color:#5a4300}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:14px}@media(max-width:1000px){
.grid2{grid-template-columns:1fr}}.controls{display:flex;flex-wrap:wrap;gap:8px;
align-items:center;margin:10px 0}.controls button{border:1px solid var(--line);
background:#fff;border-radius:16px;padding:5px 12px;cursor:pointer;font:inherit}
.controls button.active{background:var(--blue);color:#fff;border-color:var(--blue)}
.controls input{padding:5px 10px;border:1px solid var(--line);border-radius:16px;
min-width:260px;font:inherit}#atlas-cards{display:grid;grid-template-columns:repeat(auto-fill,
minmax(420px,1fr));gap:14px}.card{background:#fff;border:1px solid var(--line);
border-radius:8px;padding:12px 14px}.card h3{margin:0 0 4px;font-size:16px}
.card h3 small{color:var(--muted);font-weight:400}.stats{display:flex;flex-wrap:wrap;
gap:6px 14px;font-size:12.5px;color:var(--muted);margin:6px 0}.stats b{color:var(--ink)}
.rate{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:700;color:#fff}
.rate.good{background:var(--blue)}.rate.mid{background:#6b7280}.rate.bad{background:var(--verm)}
.rate.few{background:#c4c7cc;color:#333}
.badge{display:inline-block;padding:0 7px;border-radius:10px;font-size:11.5px;font-weight:600;
margin-left:4px;border:1px solid currentColor}.badge.trusted{color:var(--green)}
.badge.untrusted{color:#6b7280}.badge.catchall{color:var(--verm)}
.meter{height:6px;background:#eceef2;border-radius:3px;overflow:hidden;margin:4px 0 8px}
.meter i{display:block;height:100%;background:var(--blue)}.chips span{display:inline-block;
background:#eef3fa;border-radius:10px;padding:1px 8px;margin:2px 3px 2px 0;font-size:12px}
.card h4{margin:10px 0 3px;font-size:12px;text-transform:uppercase;letter-spacing:.04em;
color:var(--muted)}.card ol,.card ul{margin:0;padding-left:20px}.card li{margin:1px 0}
.fail{margin:4px 0 6px}.fail .q{font-weight:600}.recs{color:var(--muted);font-size:12.5px}
.rec{color:var(--ink)}.card h3{display:flex;justify-content:space-between;
gap:8px;align-items:baseline}.card h3 .rate{white-space:nowrap;font-size:12.5px}
table.kv{border-collapse:collapse;background:#fff;font-size:13px}
table.kv td,table.kv th{border:1px solid var(--line);padding:4px 10px;text-align:left}
table.kv th{background:#f0f2f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#fff;border:1px solid var(--line);padding:10px;overflow:auto;font-size:12px}
details summary{cursor:pointer;color:var(--blue);font-weight:600}
#broken{display:none;background:#fde8e0;color:#7a2000;padding:8px 32px}
"""

SCRIPT = """
function sortAtlas(key){
  const atlas=document.getElementById('atlas-cards');
  const cards=[...atlas.querySelectorAll('.card')];
  cards.sort((a,b)=>key==='id'?(+a.dataset.id)-(+b.dataset.id)
                              :(+b.dataset[key])-(+a.dataset[key]));
  cards.forEach(c=>atlas.appendChild(c));
  document.querySelectorAll('.controls button').forEach(
    b=>b.classList.toggle('active',b.dataset.sort===key));
}
function filterAtlas(text){
  const q=text.trim().toLowerCase();
  document.querySelectorAll('#atlas-cards .card').forEach(
    c=>{c.hidden=q!==''&&!c.textContent.toLowerCase().includes(q);});
}
window.addEventListener('load',()=>{
  const imgs=[...document.images];
  const broken=imgs.filter(i=>!(i.complete&&i.naturalWidth>0));
  document.documentElement.dataset.images=imgs.length;
  document.documentElement.dataset.brokenImages=broken.length;
  if(broken.length){const b=document.getElementById('broken');
    b.textContent=broken.length+' image(s) failed to load';b.style.display='block';}
});
"""


def fmt_int(value: Any) -> str:
    return "–" if value is None or pd.isna(value) else f"{int(round(float(value))):,}"


def fmt_pct(value: Any, digits: int = 0) -> str:
    return "–" if value is None or pd.isna(value) else f"{100 * float(value):.{digits}f}%"


def fmt_num(value: Any, digits: int = 3) -> str:
    if value is None or pd.isna(value):
        return "–"
    value = float(value)
    return f"{value:,.0f}" if value.is_integer() and abs(value) >= 2 else f"{value:.{digits}f}"


def not_available(reason: str) -> str:
    return f'<p class="na">Not available in this run: {escape(reason)}.</p>'


def as_list(value: Any) -> list[str]:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return []
    return [str(v) for v in value]


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def kv_table(rows: Iterable[tuple[str, Any]], header: tuple[str, str] | None = None) -> str:
    head = f"<tr><th>{escape(header[0])}</th><th>{escape(header[1])}</th></tr>" if header else ""
    body = "".join(
        f"<tr><td>{escape(str(k))}</td>"
        f"<td class=\"{'num' if is_number(v) else ''}\">"
        f"{escape(f'{v:,}' if is_number(v) and isinstance(v, int) else str(v))}</td></tr>"
        for k, v in rows)
    return f'<table class="kv">{head}{body}</table>'


def figure_html(figure: RenderedFigure) -> str:
    if figure.path is None:
        return (f'<figure id="fig-{figure.name}"><h3>{escape(figure.title)}</h3>'
                f"{not_available(figure.missing)}</figure>")
    encoded = base64.b64encode(figure.path.read_bytes()).decode("ascii")
    return (f'<figure id="fig-{figure.name}"><img alt="{escape(figure.title)}" '
            f'data-file="{escape(figure.path.name)}" src="data:image/png;base64,{encoded}">'
            f"<figcaption>{escape(figure.caption)} "
            f'<a href="{escape(figure.path.name)}">PNG</a></figcaption></figure>')


def cluster_table(data: ReportData) -> pd.DataFrame | None:
    """`clusters` with failing counts merged in, one row per cluster."""
    frame = data.table("clusters")
    if frame is None:
        return None
    failing = data.table("failing_by_cluster")
    if failing is not None:
        frame = frame.merge(failing, on="cluster_id", how="left")
    return frame.sort_values("n_searches", ascending=False).reset_index(drop=True)


def cluster_name(names: dict[int, str], cluster_id: Any) -> str:
    if cluster_id is None or pd.isna(cluster_id):
        return "unknown cluster"
    return names.get(int(cluster_id), f"#{int(cluster_id)}")


def interval_text(row: dict[str, Any], confidence: float) -> str:
    """'95% Wilson interval 51%–72% over 40 labelled queries', or '' without bounds."""
    low, high, n = row.get("success_rate_low"), row.get("success_rate_high"), row.get("n_labelled")
    if low is None or pd.isna(low) or high is None or pd.isna(high):
        return ""
    return (f"{fmt_pct(confidence)} Wilson interval {fmt_pct(low)}–{fmt_pct(high)} over "
            f"{fmt_int(n)} labelled queries")


def rate_badge(row: dict[str, Any], median: float | None, data: ReportData) -> str:
    """The cluster's success rate with its interval on hover; grey where it rests on fewer
    than `success.min_cluster_labels` labelled queries."""
    rate, n = row.get("success_rate"), row.get("n_labelled")
    minimum = int(data.success_setting("min_cluster_labels"))
    if few_labels(n, minimum):
        tip = escape(f"only {fmt_int(n)} labelled queries (success.min_cluster_labels="
                     f"{minimum}): too few for a rate")
        return f'<span class="rate few" title="{tip}">{fmt_int(n)} labelled: too few</span>'
    if rate is None or pd.isna(rate):
        return '<span class="rate mid">success n/a</span>'
    kind = "mid" if median is None else ("good" if rate >= median else "bad")
    tip = escape(interval_text(row, float(data.success_setting("confidence"))))
    return f'<span class="rate {kind}" title="{tip}">{fmt_pct(rate)} success</span>'


def rec_html_item(rec: dict[str, Any], cluster_id: int, names: dict[int, str]) -> str:
    """One suggestion: the query, its similarity, and its cluster when it is another one."""
    other = rec.get("rec_cluster_id")
    elsewhere = other is not None and not pd.isna(other) and int(other) != cluster_id
    where = f" in {cluster_name(names, other)}" if elsewhere else ""
    tip = rec.get("reason") or ""
    return (f'<span class="rec" title="{escape(str(tip))}">{escape(str(rec["rec_query"]))}'
            f"<small> ({fmt_num(rec.get('similarity'), 2)}{escape(where)})</small></span>")


def failing_html(data: ReportData, cluster_id: int, names: dict[int, str]) -> str:
    if data.failing is None:
        return not_available("failing queries need `success_labels` and `queries`")
    rows = data.failing[data.failing["cluster_id"] == cluster_id]
    if rows.empty:
        return "<p>No failing queries with enough support.</p>"
    recs = data.recommendations
    items = []
    for row in rows.to_dict("records"):
        score = (f", success score {fmt_num(row['success_score'], 2)}"
                 if "success_score" in row else "")
        rec_html = ""
        if recs is not None:
            mine = recs[recs["query_key"] == row["query_key"]]
            rec_items = " · ".join(rec_html_item(r, cluster_id, names)
                                   for r in mine.to_dict("records"))
            rec_html = f'<div class="recs">→ {rec_items or "no suggestion"}</div>'
        items.append(f'<li class="fail"><span class="q">{escape(str(row["query"]))}</span> '
                     f"<small>{fmt_int(row['n_searches'])} searches{score}</small>{rec_html}</li>")
    note = "" if recs is not None else not_available("the `recommendations` table is absent")
    return f"<ol>{''.join(items)}</ol>{note}"


def flag(value: Any) -> bool | None:
    """A nullable boolean from a table cell (None where null or absent)."""
    if value is None or (not isinstance(value, (bool, str)) and pd.isna(value)):
        return None
    return bool(value)


def trust_badges(row: dict[str, Any]) -> str:
    """`trusted` / `not trusted` and `catch-all` badges of a cluster, with their numbers."""
    stability = row.get("stability")
    tip = escape(f"stability {fmt_num(stability, 2)}, mean silhouette "
                 f"{fmt_num(row.get('mean_silhouette_euclidean_sampled'), 2)}, "
                 f"{fmt_int(row.get('size'))} queries")
    trusted = flag(row.get("trusted"))
    badges = ""
    if trusted is True:
        badges += f'<span class="badge trusted" title="{tip}">trusted</span>'
    elif trusted is False:
        badges += f'<span class="badge untrusted" title="{tip}">not trusted</span>'
    if flag(row.get("catch_all")):
        badges += ('<span class="badge catchall" title="queries far from the centroid and from '
                   'each other">catch-all</span>')
    return badges


def card_html(row: dict[str, Any], data: ReportData, names: dict[int, str],
              median: float | None, total_searches: float) -> str:
    cid = int(row["cluster_id"])
    label = names.get(cid, f"#{cid}")
    rate = row.get("success_rate")
    failure = -1.0 if rate is None or pd.isna(rate) else 1 - float(rate)
    failed_searches = row.get("failing_searches")
    failed_searches = 0 if failed_searches is None or pd.isna(failed_searches) else failed_searches
    silhouette = row.get("mean_silhouette_sqeuclidean")
    share = row["n_searches"] / total_searches if total_searches else None
    terms = "".join(f"<span>{escape(t)}</span>" for t in as_list(row.get("top_terms"))[:10])
    top = "".join(f"<li>{escape(q)}</li>" for q in as_list(row.get("top_queries")))
    central = "".join(f"<li>{escape(q)}</li>" for q in as_list(row.get("central_queries")))
    nxt = row.get("next_cluster_id")
    neighbour = ("" if nxt is None or pd.isna(nxt)
                 else f" · nearest cluster {escape(cluster_name(names, nxt))}")
    few = few_labels(row.get("n_labelled"), int(data.success_setting("min_cluster_labels")))
    meter = "" if failure < 0 or few else (
        f'<div class="meter"><i style="width:{100 - 100 * failure:.0f}%"></i></div>')
    failing_count = row.get("failing_queries")
    failing_text = ("" if failing_count is None or pd.isna(failing_count)
                    else f"<span><b>{fmt_int(failing_count)}</b> failing queries "
                         f"(<b>{fmt_int(failed_searches)}</b> searches)</span>")
    stability = row.get("stability")
    trust = -1.0 if stability is None or pd.isna(stability) else float(stability)
    trust += 1.0 if flag(row.get("trusted")) else 0.0
    stability_text = ("" if stability is None or pd.isna(stability)
                      else f"<span>stability <b>{fmt_num(stability, 2)}</b></span>")
    return f"""<article class="card" id="cluster-{cid}" data-id="{cid}"
 data-traffic="{float(row['n_searches'])}" data-failure="{failure}"
 data-failed="{float(failed_searches)}" data-silhouette="{fmt_num(silhouette, 6)}"
 data-trust="{trust}">
<h3><span>{escape(label)}{trust_badges(row)}</span> {rate_badge(row, median, data)}</h3>
<div class="stats"><span><b>{fmt_int(row['n_searches'])}</b> searches ({fmt_pct(share, 1)})</span>
<span><b>{fmt_int(row['size'])}</b> queries ({fmt_pct(row.get('share'), 1)})</span>
<span>silhouette <b>{fmt_num(silhouette, 3)}</b></span>{stability_text}{failing_text}</div>{meter}
<div class="chips">{terms}</div>
<div class="grid2"><div><h4>Most searched</h4><ol>{top}</ol></div>
<div><h4>Most typical</h4><ol>{central}</ol></div></div>
<h4>Worst-failing queries and what to suggest instead</h4>{failing_html(data, cid, names)}
<div class="stats">cluster #{cid}{neighbour}</div></article>"""


def atlas_html(data: ReportData) -> str:
    frame = cluster_table(data)
    if frame is None:
        return not_available("the `clusters` table has no rows for this run")
    names = cluster_names(data)
    rates = frame["success_rate"] if "success_rate" in frame else pd.Series(dtype=float)
    if "n_labelled" in frame:
        minimum = int(data.success_setting("min_cluster_labels"))
        rates = rates[[not few_labels(n, minimum) for n in frame["n_labelled"]]]
    median = float(rates.median()) if rates.notna().any() else None
    total = data.totals.get("searches") or float(frame["n_searches"].sum())
    cards = "".join(card_html(r, data, names, median, total) for r in frame.to_dict("records"))
    buttons = [("traffic", "Traffic"), ("failure", "Failure rate"),
               ("failed", "Failed searches"), ("silhouette", "Silhouette"), ("trust", "Trust"),
               ("id", "Cluster id")]
    controls = "".join(
        f'<button data-sort="{k}" class="{"active" if k == "traffic" else ""}" '
        f"onclick=\"sortAtlas('{k}')\">{t}</button>" for k, t in buttons)
    intro = ("<p>One card per cluster. <b>Failure rate</b> is the share of the cluster's labelled "
             "queries that failed; <b>failed searches</b> counts the searches of those queries, "
             "the traffic a fix would win back. Badges compare each cluster with the median "
             "cluster (blue at or above, red below). Under each failing query, → lists the queries "
             "to suggest instead (from successful clusters) with their similarity to it; hover "
             "over one for the full reason. <b>Trusted</b> clusters are stable under bootstrap "
             "refits (stability, the mean best-match Jaccard, at least the configured minimum), "
             "have a positive mean silhouette and enough queries; a <b>catch-all</b> cluster's "
             "queries are far from its centroid and from each other. Sort by trust to see the "
             "trusted clusters first.</p>")
    return (f'{intro}<div class="controls"><span>Sort by</span>{controls}'
            f'<input type="search" placeholder="Filter: brand, term, query…" '
            f'oninput="filterAtlas(this.value)"></div><div id="atlas-cards">{cards}</div>')


def skipped_html(data: ReportData) -> str:
    """A notice for each stage the run skipped, in pipeline order, with the reason."""
    return "".join(
        f'<p class="na">The {escape(name)} stage was skipped: {escape(reason)}.</p>'
        for name, reason in sorted(data.skipped.items(), key=lambda item: stage_order(item[0])))


def tiles_html(data: ReportData) -> str:
    tiles = []
    if data.totals:
        tiles += [(fmt_int(data.totals.get("queries")), "distinct queries"),
                  (fmt_int(data.totals.get("searches")), "searches")]
    clusters = data.table("clusters")
    if clusters is not None:
        tiles.append((str(len(clusters)), "clusters"))
        trusted = [flag(v) for v in clusters.get("trusted", pd.Series(dtype=object))]
        if any(t is not None for t in trusted):
            tiles.append((f"{sum(t is True for t in trusted)} of {len(clusters)}",
                          "clusters trusted"))
    failing = data.table("failing_by_cluster")
    if failing is not None and failing["labelled"].sum():
        labelled = failing["labelled"].sum()
        rate = 1 - failing["failing_queries"].sum() / labelled
        tiles.append((fmt_pct(rate), f"of {fmt_int(labelled)} labelled queries succeed"))
        if "failing_searches" in failing and data.totals.get("searches"):
            share = failing["failing_searches"].sum() / data.totals["searches"]
            tiles.append((fmt_pct(share), "of searches go to failing queries"))
    tiles += model_tiles(data)
    return "".join(f'<div class="tile"><b>{v}</b><span>{escape(t)}</span></div>'
                   for v, t in tiles)


def model_refusal(data: ReportData) -> str | None:
    """Why the success stage trained no model (facts `success.model` 'skipped: ...'), else
    None."""
    success = data.facts.get("success", {}) if isinstance(data.facts, dict) else {}
    model = success.get("model") if isinstance(success, dict) else None
    if isinstance(model, str) and model.startswith("skipped: "):
        return model.removeprefix("skipped: ")
    return None


def model_tiles(data: ReportData) -> list[tuple[str, str]]:
    """The success model's ROC AUC on the test split (else validation), naming the split and
    its size; 'not trained' when the stage refused to train one."""
    if model_refusal(data):
        return [("not trained", "success model: too few labels (see Success model)")]
    metrics = data.table("model_metrics")
    if metrics is None:
        return []
    nn = metrics[metrics["model"] == "nn"]
    for split in ("test", "validation"):
        rows = nn[nn["split"] == split].set_index("metric")["value"]
        if "roc_auc" in rows:
            size = f"n={fmt_int(rows['n'])}" if "n" in rows else "size not recorded"
            return [(fmt_num(rows["roc_auc"], 2), f"success model ROC AUC · {split}, {size}")]
    return []


def labels_html(data: ReportData) -> str:
    """How many queries the labelling rule left unlabelled and why; the model refusal note."""
    note = model_refusal(data)
    parts = [f'<p class="na">The success model was not trained: {escape(note)}. No model '
             "metrics are reported.</p>"] if note else []
    metrics = data.table("model_metrics")
    if metrics is None:
        return "".join(parts)
    values = metrics[(metrics["model"] == "labels") & (metrics["split"] == "all")].set_index(
        "metric")["value"]
    if "queries" not in values:
        return "".join(parts)
    threshold = (f"the threshold {fmt_num(values['threshold'], 3)} on the smoothed score "
                 "split them into" if "threshold" in values else "no threshold, so")
    parts.append(
        f"<p>Labels: <b>success.min_support={fmt_int(values.get('min_support'))}</b> left "
        f"<b>{fmt_int(values.get('low_support'))}</b> of {fmt_int(values['queries'])} queries "
        f"unlabelled (too few searches; {fmt_int(values.get('unlabelled'))} unlabelled in all); "
        f"of the {fmt_int(values.get('labelled'))} labelled, {threshold} "
        f"{fmt_int(values.get('successful'))} successes and "
        f"{fmt_int(values.get('labelled', 0) - values.get('successful', 0))} failures. "
        f"{fmt_int(values.get('with_failure_evidence'))} queries carry failure evidence "
        "(reformulated or zero-result searches).</p>")
    return "".join(parts)


def metrics_html(data: ReportData) -> str:
    metrics = data.table("model_metrics")
    if metrics is None:
        return not_available("the `model_metrics` table has no rows for this run")
    models = ["nn", "logistic_regression", "cluster_rate", "majority"]
    main = metrics[metrics["model"].isin(models) & (metrics["split"] == "test")]
    full = kv_table([(f"{r['model']} / {r['split']} / {r['metric']}", fmt_num(r["value"], 4))
                     for r in metrics.sort_values(["model", "split", "metric"]).to_dict("records")])
    details = f"<details><summary>All metrics of this run</summary>{full}</details>"
    if main.empty:
        return details
    wide = main.pivot_table(index=["model", "split"], columns="metric", values="value",
                            aggfunc="first").reset_index()
    wide["order"] = wide["model"].map({m: i for i, m in enumerate(models)})
    wide = wide.sort_values("order").drop(columns="order")
    cols = list(wide.columns)
    head = "".join(f"<th>{escape(str(c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(
            f'<td class="num">{fmt_num(r[c])}</td>' if c not in ("model", "split")
            else f"<td>{escape(str(r[c]))}</td>" for c in cols) + "</tr>"
        for r in wide.to_dict("records"))
    return f'<table class="kv"><tr>{head}</tr>{body}</table>{details}'


RECOMMEND_MODELS = {"recommend_blend": "blend", "recommend_nearest_cluster": "seed rule "
                    "(nearest successful cluster)", "recommend_reformulation": "reformulations "
                    "alone", "recommend_lexical": "lexical alone"}
RECOMMEND_METRICS = ("n_evaluated", "hit_at_1", "hit_at_5", "mrr", "intended_recovery",
                     "misspelt_brand_recall", "same_category_share", "higher_true_p_share")


def recommend_holdout_html(data: ReportData) -> str:
    """hit@1, hit@5, MRR (and the demo truth metrics) of each recommender on held-out sessions
    (`model_metrics` splits `holdout`, `holdout_truth`) under its own heading; nothing when
    the run has no held-out evaluation."""
    metrics = data.table("model_metrics")
    rows = None if metrics is None else metrics[
        metrics["model"].isin(list(RECOMMEND_MODELS))
        & metrics["split"].isin(["holdout", "holdout_truth"])]
    if rows is None or rows.empty:
        return ""
    values = rows.set_index(["model", "metric"])["value"]
    shown = [m for m in RECOMMEND_METRICS if m in set(rows["metric"])]
    head = "".join(f"<th>{escape(m)}</th>" for m in ("recommender", *shown))
    body = "".join(
        f"<tr><td>{escape(name)}</td>" + "".join(
            f'<td class="num">{fmt_num(values.get((model, m)), 3)}'
            + (f"<small> (n={fmt_int(values.get((model, f'{m}_n')))})</small>"
               if (model, f"{m}_n") in values.index else "") + "</td>" for m in shown) + "</tr>"
        for model, name in RECOMMEND_MODELS.items() if model in set(rows["model"]))
    return ("<h3>Recommendations on held-out sessions</h3>"
            f'<table class="kv"><tr>{head}</tr>{body}</table><p>Cases: held-out failed searches '
            "reformulated to a recommendable query; suggestions built without those "
            "sessions.</p>")


def validation_html(data: ReportData) -> str:
    """The cluster model's agreement with reference classes (`model_metrics`, split
    `external` or `score_external`), or why there is none."""
    metrics = data.table("model_metrics")
    if metrics is None:
        return not_available("the `model_metrics` table has no rows for this run")
    rows = metrics[(metrics["model"] == "cluster_kmeans")
                   & metrics["split"].isin(["external", "score_external"])]
    if rows.empty:
        return not_available("no reference classes (set evaluate.labels; demo logs use their "
                             "ground truth)")
    source = (data.facts.get("cluster", {}) if isinstance(data.facts, dict) else {}).get(
        "external_labels", "reference classes")
    names = {"ami": "adjusted mutual information", "nmi": "normalised mutual information",
             "ari": "adjusted Rand index", "purity": "purity", "inverse_purity": "inverse purity",
             "labelled_rows": "labelled queries", "label_classes": "classes",
             "label_coverage": "labelled share of queries"}
    values = rows.set_index("metric")["value"]
    table = kv_table([(names[m], fmt_int(values[m]) if m in ("labelled_rows", "label_classes")
                       else fmt_num(values[m], 3)) for m in names if m in values.index],
                     ("metric", "value"))
    return f"<p>Against {escape(str(source))}:</p>{table}"


def flat(mapping: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if not isinstance(mapping, dict):
        return [(prefix, mapping)]
    rows: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        rows += flat(value, name) if isinstance(value, dict) else [(name, value)]
    return rows


def stage_order(name: str) -> tuple[int, str]:
    order = ["ingest", "embed", "cluster", "score", "success", "recommend", "report"]
    return (order.index(name) if name in order else len(order), name)


def run_html(data: ReportData) -> str:
    m = data.manifest
    config = data.config
    parts = []
    source = config.get("input", {})
    data_rows = [("input format", source.get("format", "–")),
                 ("input", source.get("table") or source.get("path", "–"))]
    data_rows += flat(data.facts.get("ingest", {}), "ingest")
    parts.append("<div><h3>Data</h3>" + kv_table(data_rows) + "</div>")
    model_rows = [("embedding model", config.get("embed", {}).get("model", "–"))]
    model_rows += flat(data.facts.get("embed", {}), "embed")
    model_rows += [(f"cluster.{k}", v) for k, v in config.get("cluster", {}).items()
                   if k in ("backend", "n_components", "n_clusters", "n_init", "seed")]
    success = data.facts.get("success", {})
    model_rows += [(f"success.{k}", v) for k, v in flat(success)
                   if k in ("model", "backend", "best_epoch", "train_seconds")]
    parts.append("<div><h3>Model</h3>" + kv_table(model_rows) + "</div>")
    timings = m.get("timings") or {}
    parts.append("<div><h3>Stage timings</h3>" + (
        kv_table([(k, f"{timings[k]:,.1f} s") for k in sorted(timings, key=stage_order)]
                 + [("total", f"{sum(timings.values()):,.1f} s")], ("stage", "seconds"))
        if timings else not_available("the manifest records no timings")) + "</div>")
    counts = m.get("counts") or {}
    parts.append("<div><h3>Rows written</h3>" + (
        kv_table(sorted(counts.items()), ("table", "rows"))
        if counts else not_available("the manifest records no row counts")) + "</div>")
    meta = [("run id", data.run_id), ("status", m.get("status", "–")),
            ("started", m.get("started_at", "–")), ("finished", m.get("finished_at", "–")),
            ("database", data.database)]
    versions = m.get("versions") or {}
    return (kv_table(meta) + f'<div class="grid2">{"".join(parts)}</div>'
            f"<details><summary>Library versions</summary>{kv_table(versions.items())}</details>"
            f"<details><summary>Full configuration</summary>"
            f"<pre>{escape(json.dumps(config, indent=2, sort_keys=True, default=str))}</pre>"
            f"</details>")


def section_figures(figures: list[RenderedFigure], section: str, paired: bool = False) -> str:
    items = [figure_html(f) for f in figures if f.section == section]
    if paired:
        return f'<div class="grid2">{"".join(items)}</div>'
    return "".join(items)


def status_text(manifest: dict[str, Any]) -> str:
    status = str(manifest.get("status", "unknown"))
    if status == "running":
        return "written by the run's last stage"
    return f"status {status}"


def render_html(data: ReportData, figures: list[RenderedFigure]) -> str:
    """The complete report page."""
    m = data.manifest
    nav = "".join(f'<a href="#{k}">{escape(t)}</a>' for k, t in SECTIONS)
    body = {
        "clusters": section_figures(figures, "clusters"),
        "atlas": atlas_html(data),
        "model": labels_html(data) + section_figures(figures, "model", paired=True)
        + "<h3>Metrics</h3>" + metrics_html(data) + recommend_holdout_html(data),
        "choice": section_figures(figures, "choice")
        + "<h3>Agreement with reference classes</h3>" + validation_html(data),
        "run": run_html(data),
    }
    sections = "".join(f'<section id="{k}"><h2>{escape(t)}</h2>{body[k]}</section>'
                       for k, t in SECTIONS)
    when = m.get("finished_at") or m.get("started_at") or ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>querylens report · {escape(data.run_id)}</title><style>{CSS}</style></head>
<body><header><h1>Where search succeeds and where it fails</h1>
<p>querylens run <b>{escape(data.run_id)}</b> · {escape(status_text(m))}
{('· ' + escape(str(when))) if when else ''}</p></header><div id="broken"></div>
<nav>{nav}</nav><main><div class="tiles">{tiles_html(data)}</div>{skipped_html(data)}
{sections}</main>
<script>{SCRIPT}</script></body></html>
"""

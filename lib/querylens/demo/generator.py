"""Demo search logs generated inside Spark: a query catalogue and Zipf-distributed search events.

Every random draw is a hash of row ids, the seed and a per-draw salt, so the output depends only on
the arguments, never on partitioning. The catalogue's `p_success` is the hidden ground truth: it is
set by the kind of query (brand + category high; misspelt, vague, non-English and unstocked brands
low), the category, and a little noise keyed on the full search text (query plus filters), so
templates that search for the same thing share one `p_success`.

Sessions behave like real ones (`Behaviour`): a failing search of a kind in `REFORMULATIONS` is
often followed, seconds later in the same session, by its reformulation, a companion catalogue
row (`reformulates` names the template it rewrites); otherwise the user abandons that need. Some
searches are preceded by an as-you-type prefix; some satisfied searches get no click; searches
for what the shop lacks (`in_stock` false) show no results.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from querylens.demo import vocabulary as vocab
from querylens.runtime.session import default_parallelism

KINDS: tuple[tuple[str, float], ...] = (
    ("brand_only", 0.10),
    ("category_only", 0.08),
    ("vague", 0.05),
    ("brand_category", 0.20),
    ("product_line", 0.08),
    ("gender_category", 0.09),
    ("category_colour", 0.12),
    ("category_material", 0.08),
    ("non_english", 0.06),
    ("misspelt_brand", 0.08),
    ("unstocked_brand", 0.06),
    ("over_long", 0.05),
)

BASE_SUCCESS: dict[str, float] = {
    "product_line": 0.72,
    "brand_category": 0.68,
    "brand_only": 0.55,
    "gender_category": 0.52,
    "category_colour": 0.50,
    "category_material": 0.46,
    "category_only": 0.45,
    "non_english": 0.30,
    "vague": 0.25,
    "misspelt_brand": 0.20,
    "unstocked_brand": 0.075,
    "over_long": 0.15,
}

CATEGORY_EFFECT: dict[str, float] = {
    "sneakers": 1.15, "trainers": 1.12, "jeans": 1.12, "t-shirts": 1.10, "dresses": 1.08,
    "hoodies": 1.08, "bags": 1.05, "puffer jackets": 1.05, "boots": 1.04, "maxi dresses": 1.03,
    "sunglasses": 0.92, "bucket hats": 0.92, "blouses": 0.92, "clogs": 0.90, "pyjamas": 0.90,
    "jewellery": 0.85, "earrings": 0.85, "swimwear": 0.85, "bikinis": 0.85, "lingerie": 0.82,
    "suits": 0.82, "watches": 0.78,
}

RESULT_RANGE: dict[str, tuple[int, int]] = {
    "vague": (300, 6000),
    "brand_only": (40, 3000),
    "category_only": (150, 4000),
    "gender_category": (100, 3000),
    "category_colour": (20, 800),
    "category_material": (10, 600),
    "brand_category": (5, 400),
    "product_line": (3, 60),
    "non_english": (2, 300),
    "misspelt_brand": (1, 40),
    "unstocked_brand": (1, 25),
    "over_long": (1, 12),
}

REFORMULATIONS: dict[str, str] = {
    "misspelt_brand": "spelling",
    "vague": "specific",
    "unstocked_brand": "substitute",
    "over_long": "shorter",
}
INTENDED_IS_REFORMULATION: tuple[str, ...] = ("spelling", "specific")
OVER_LONG_MISSING_RATE = 0.5

FILTER_RATE: dict[str, float] = {
    "filter_gender": 0.18,
    "filter_category": 0.12,
    "filter_brand": 0.08,
    "filter_colour": 0.06,
    "filter_material": 0.04,
}

FILTER_COLUMNS: tuple[str, ...] = tuple(FILTER_RATE)
KEY_FILTER_ORDER: tuple[str, ...] = (
    "filter_gender", "filter_brand", "filter_colour", "filter_material", "filter_category"
)
STOCKED_BRANDS: tuple[str, ...] = tuple(
    b for b in vocab.BRANDS if b not in frozenset(vocab.UNSTOCKED_BRANDS)
)

SESSION_BLOCK_BITS = 4
EVENT_GAP_SECONDS = 45
BLOCK_SPAN_SECONDS = (1 << SESSION_BLOCK_BITS) * EVENT_GAP_SECONDS
DAY_SECONDS = 86_400
EVENTS_PER_PARTITION = 2_000_000
REFORMULATION_DELAY_SECONDS: tuple[int, int] = (11, 50)
FRAGMENT_LEAD_SECONDS: tuple[int, int] = (1, 4)
STRAY_CLICK_RATE = 0.1


@dataclasses.dataclass(frozen=True)
class Behaviour:
    """Session behaviour rates: a failing search of a `REFORMULATIONS` kind is followed by its
    reformulation with `reformulate_rate` (when the next search is in the same session); an
    event is an as-you-type prefix of the next search with `fragment_rate`; a successful search
    gets no click with `satisfied_no_click_rate`."""

    reformulate_rate: float = 0.6
    fragment_rate: float = 0.1
    satisfied_no_click_rate: float = 0.08

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{field.name} must be in [0, 1], got {value}")


def uniform(seed: int, salt: int, *cols: Column) -> Column:
    """A uniform double in [0, 1) hashed from `cols`, the seed and a per-draw salt."""
    h = F.xxhash64(*cols, F.lit(seed).cast("long"), F.lit(salt).cast("long"))
    return F.shiftrightunsigned(h, 11).cast("double") / float(1 << 53)


def index(n: int, u: Column) -> Column:
    """1-based index into `n` items from a uniform."""
    return F.least(F.floor(u * n) + 1, F.lit(n)).cast("int")


def element(values: tuple[str, ...], idx: Column) -> Column:
    """`values[idx - 1]` as a Spark array-literal lookup."""
    return F.element_at(F.array(*[F.lit(v) for v in values]), idx)


def pick(values: tuple[str, ...], u: Column) -> Column:
    """One of `values` chosen by a uniform."""
    return element(values, index(len(values), u))


def lookup(mapping: dict[str, float], key: Column, default: float) -> Column:
    """`mapping[key]` as a Spark map literal, `default` when absent."""
    entries = [c for k, v in mapping.items() for c in (F.lit(k), F.lit(v))]
    return F.coalesce(F.try_element_at(F.create_map(*entries), key), F.lit(default))


def lookup_text(mapping: dict[str, str], key: Column) -> Column:
    """`mapping[key]` as a Spark map literal, null when absent."""
    entries = [F.lit(c) for k, v in mapping.items() for c in (k, v)]
    return F.try_element_at(F.create_map(*entries), key)


def headness(template_id: Column, n_queries: int) -> Column:
    """1.0 for the most popular template falling to 0.0 for the least, on a log scale."""
    return 1.0 - F.log1p(template_id.cast("double")) / math.log(n_queries + 1)


def choose_kind(u: Column, template_id: Column, n_queries: int) -> Column:
    """Query kind by `KINDS` weights, skewed so popular (low id) templates are simpler queries."""
    skewed = F.pow(u, 1.0 + 0.8 * headness(template_id, n_queries))
    total = sum(w for _, w in KINDS)
    bounds = list(itertools.accumulate(w / total for _, w in KINDS))
    kind = F.when(skewed < bounds[0], KINDS[0][0])
    for (name, _), bound in zip(KINDS[1:-1], bounds[1:-1], strict=True):
        kind = kind.when(skewed < bound, name)
    return kind.otherwise(KINDS[-1][0])


def words(*parts: Column | str) -> Column:
    """Space-joined non-null parts."""
    return F.concat_ws(" ", *[F.col(p) if isinstance(p, str) else p for p in parts])


def vocabulary_draws(seed: int, template_id: Column, n_queries: int) -> list[Column]:
    """Per-template draws of every vocabulary slot; popular templates favour popular brands."""

    def u(salt: int) -> Column:
        return uniform(seed, salt, template_id)

    cat = index(len(vocab.CATEGORIES), u(4))
    gender = index(len(vocab.GENDER_TERMS), u(8))
    miss = index(len(vocab.MISSPELLINGS), u(10))
    line = index(len(vocab.PRODUCT_LINES), u(11))
    foreign = index(len(vocab.NON_ENGLISH), u(12))
    plural = element(tuple(c for c, _ in vocab.CATEGORIES), cat)
    singular = element(tuple(s for _, s in vocab.CATEGORIES), cat)
    return [
        pick(STOCKED_BRANDS, F.pow(u(2), 1.5 + 3.0 * headness(template_id, n_queries)))
        .alias("brand"),
        pick(vocab.UNSTOCKED_BRANDS, u(3)).alias("unstocked"),
        plural.alias("category"),
        F.when(u(5) < 0.4, singular).otherwise(plural).alias("cat_word"),
        pick(vocab.COLOURS, u(6)).alias("colour"),
        pick(vocab.MATERIALS, u(7)).alias("material"),
        element(tuple(t for t, _ in vocab.GENDER_TERMS), gender).alias("gender_term"),
        element(tuple(g for _, g in vocab.GENDER_TERMS), gender).alias("gender"),
        pick(vocab.SIZES, u(9)).alias("size"),
        element(tuple(m for m, _ in vocab.MISSPELLINGS), miss).alias("misspelt"),
        element(tuple(b for _, b in vocab.MISSPELLINGS), miss).alias("misspelt_target"),
        element(tuple(b for b, _, _ in vocab.PRODUCT_LINES), line).alias("line_brand"),
        element(tuple(n for _, n, _ in vocab.PRODUCT_LINES), line).alias("line"),
        element(tuple(c for _, _, c in vocab.PRODUCT_LINES), line).alias("line_category"),
        element(tuple(t for t, _, _ in vocab.NON_ENGLISH), foreign).alias("foreign"),
        element(tuple(c for _, _, c in vocab.NON_ENGLISH), foreign).alias("foreign_category"),
        pick(vocab.VAGUE_QUERIES, u(13)).alias("vague_word"),
        u(14).alias("variant"),
        u(15).alias("casing"),
    ]


def typed_query() -> tuple[Column, Column, Column]:
    """(query text, brand named in it, category named in it) from the drawn slots and kind."""
    kind, v = F.col("kind"), F.col("variant")
    with_cat = v >= 0.5
    text = (
        F.when(kind == "brand_only", F.col("brand"))
        .when(kind == "brand_category",
              F.when(v < 0.15, words("gender_term", "brand", "cat_word"))
              .when(v < 0.30, words("brand", "colour", "cat_word"))
              .when(v < 0.36, words("brand", "cat_word", "size"))
              .otherwise(words("brand", "cat_word")))
        .when(kind == "product_line",
              F.when(v < 0.2, words("line_brand", "line", "colour"))
              .otherwise(words("line_brand", "line")))
        .when(kind == "category_only",
              F.when(v < 0.15, words("cat_word", "size")).otherwise(F.col("cat_word")))
        .when(kind == "gender_category", words("gender_term", "cat_word"))
        .when(kind == "category_colour",
              F.when(v < 0.3, words("colour", "material", "cat_word"))
              .otherwise(words("colour", "cat_word")))
        .when(kind == "category_material", words("material", "cat_word"))
        .when(kind == "misspelt_brand",
              F.when(with_cat, words("misspelt", "cat_word")).otherwise(F.col("misspelt")))
        .when(kind == "unstocked_brand",
              F.when(with_cat, words("unstocked", "cat_word")).otherwise(F.col("unstocked")))
        .when(kind == "non_english",
              F.when(v < 0.25, words("foreign", "brand")).otherwise(F.col("foreign")))
        .when(kind == "over_long", words("gender_term", "colour", "material", "cat_word", "size"))
        .otherwise(F.col("vague_word"))
    )
    brand = (
        F.when(kind.isin("brand_only", "brand_category"), F.col("brand"))
        .when(kind == "product_line", F.col("line_brand"))
        .when(kind == "misspelt_brand", F.col("misspelt_target"))
        .when(kind == "unstocked_brand", F.col("unstocked"))
        .when((kind == "non_english") & (v < 0.25), F.col("brand"))
    )
    category = (
        F.when(kind.isin("brand_category", "category_only", "gender_category", "category_colour",
                         "category_material", "over_long"), F.col("category"))
        .when(kind == "product_line", F.col("line_category"))
        .when(kind.isin("misspelt_brand", "unstocked_brand") & with_cat, F.col("category"))
        .when(kind == "non_english", F.col("foreign_category"))
    )
    return text, brand, category


def reformulated_query() -> tuple[Column, Column, Column, Column]:
    """(text, brand, category, kind) of what a user types after a failing search of this
    template: the brand spelt right, a stocked brand for an unstocked one (same category words), a
    category for a vague word, colour and category for an over-long query; null otherwise."""
    kind, with_cat = F.col("kind"), F.col("variant") >= 0.5

    def branded(brand: str) -> Column:
        return F.when(with_cat, words(brand, "cat_word")).otherwise(F.col(brand))

    text = (
        F.when(kind == "misspelt_brand", branded("misspelt_target"))
        .when(kind == "unstocked_brand", branded("brand"))
        .when(kind == "vague", words("vague_word", "cat_word"))
        .when(kind == "over_long", words("colour", "cat_word"))
    )
    brand = (
        F.when(kind == "misspelt_brand", F.col("misspelt_target"))
        .when(kind == "unstocked_brand", F.col("brand"))
    )
    branded_kinds = kind.isin("misspelt_brand", "unstocked_brand")
    category = F.when((branded_kinds & with_cat) | kind.isin("vague", "over_long"),
                      F.col("category"))
    new_kind = (
        F.when(branded_kinds, F.when(with_cat, "brand_category").otherwise("brand_only"))
        .when(kind == "over_long", "category_colour")
        .when(kind == "vague", F.when(F.col("vague_word").isin(*vocab.COLOURS), "category_colour")
              .otherwise("category_only"))
    )
    return text, brand, category, new_kind


def cased(text: Column, u: Column) -> Column:
    """The text as typed: mostly lower case, sometimes capitalised, shouted or space-padded."""
    return (
        F.when(u < 0.08, F.initcap(text))
        .when(u < 0.10, F.upper(text))
        .when(u < 0.13, F.concat(text, F.lit(" ")))
        .otherwise(text)
    )


def filters(seed: int, template_id: Column) -> list[Column]:
    """The five UI filters, each set with its `FILTER_RATE` and consistent with the typed text."""
    kind = F.col("kind")
    sources = {
        "filter_gender": F.col("gender"),
        "filter_category": F.coalesce(F.col("q_category"), F.col("category")),
        "filter_brand": F.coalesce(F.col("q_brand"), F.col("brand")),
        "filter_colour": F.col("colour"),
        "filter_material": F.col("material"),
    }
    allowed = {
        "filter_category": kind != "vague",
        "filter_brand": ~kind.isin("misspelt_brand", "unstocked_brand", "vague"),
    }
    out = []
    for salt, (name, rate) in enumerate(FILTER_RATE.items(), start=20):
        cond = uniform(seed, salt, template_id) < rate
        if name in allowed:
            cond = cond & allowed[name]
        out.append(F.when(cond, sources[name]).alias(name))
    return out


def search_key(query: Column) -> Column:
    """Hash of the lower-cased, trimmed query followed by the set filters: what was searched."""
    parts = [F.lower(F.trim(query))] + [F.col(c) for c in KEY_FILTER_ORDER]
    return F.xxhash64(F.concat_ws(" ", *parts))


def success_probability(seed: int) -> Column:
    """Latent success probability from kind, category and search-keyed noise."""
    kind = F.col("kind")
    category_effect = F.when(
        kind == "unstocked_brand", F.lit(1.0)
    ).otherwise(lookup(CATEGORY_EFFECT, F.col("true_category"), 1.0))
    noise = 0.85 + 0.3 * uniform(seed, 30, F.col("search_key"))
    p = lookup(BASE_SUCCESS, kind, 0.3) * category_effect * noise
    p = F.least(F.greatest(p, F.lit(0.01)), F.lit(0.95))
    return F.when(F.col("in_stock"), p).otherwise(F.lit(0.0))


def generate_catalogue(spark: SparkSession, n_queries: int, seed: int) -> DataFrame:
    """One row per query template `template_id` 0..n_queries-1 with its filters and ground truth,
    then one companion row (`template_id` n_queries + t, `reformulates` t) per template t whose
    kind has a reformulation. `reformulation_kind` and `intended_query` (raw text, the query the
    user meant) are set on the typed rows; `in_stock` false means the search shows no results."""
    if n_queries < 1:
        raise ValueError(f"n_queries must be >= 1, got {n_queries}")
    tid = F.col("template_id")
    drawn = spark.range(n_queries).withColumnRenamed("id", "template_id").select(
        tid,
        choose_kind(uniform(seed, 1, tid), tid, n_queries).alias("kind"),
        *vocabulary_draws(seed, tid, n_queries),
    )
    text, brand, category = typed_query()
    r_text, r_brand, r_category, r_kind = reformulated_query()
    lacking = (F.col("kind") == "unstocked_brand") | (
        (F.col("kind") == "over_long") & (uniform(seed, 16, tid) < OVER_LONG_MISSING_RATE))
    typed = drawn.select(
        "*",
        cased(text, F.col("casing")).alias("query"),
        brand.alias("q_brand"),
        category.alias("q_category"),
        cased(r_text, F.col("casing")).alias("r_query"),
        r_brand.alias("r_brand"), r_category.alias("r_category"), r_kind.alias("r_kind"),
        lookup_text(REFORMULATIONS, F.col("kind")).alias("reformulation_kind"),
        (~lacking).alias("in_stock"),
    )
    filtered = typed.select("*", *filters(seed, tid))
    intended = F.when(F.col("reformulation_kind").isin(*INTENDED_IS_REFORMULATION),
                      F.col("r_query")).otherwise(F.col("query"))
    rows = ["template_id", "reformulates", "query", *FILTER_COLUMNS, "kind", "q_category",
            "q_brand", "reformulation_kind", "intended_query", "in_stock"]
    typed_rows = filtered.select(
        "*", F.lit(None).cast("long").alias("reformulates"), intended.alias("intended_query"),
    ).select(*rows)
    companions = filtered.where(F.col("r_query").isNotNull()).select(
        (tid + n_queries).alias("template_id"), tid.alias("reformulates"),
        F.col("r_query").alias("query"), *FILTER_COLUMNS, F.col("r_kind").alias("kind"),
        F.col("r_category").alias("q_category"), F.col("r_brand").alias("q_brand"),
        F.lit(None).cast("string").alias("reformulation_kind"),
        F.col("r_query").alias("intended_query"), F.lit(True).alias("in_stock"),
    )
    kind = (
        F.when((F.col("kind") == "brand_only") & F.col("filter_category").isNotNull(),
               F.lit("brand_category"))
        .otherwise(F.col("kind"))
    )
    truth = typed_rows.unionByName(companions).select(
        "template_id", "query", *FILTER_COLUMNS,
        kind.alias("kind"),
        F.coalesce("q_category", "filter_category").alias("true_category"),
        F.coalesce("q_brand", "filter_brand").alias("true_brand"),
        search_key(F.col("query")).alias("search_key"),
        "in_stock", "reformulates", "reformulation_kind", "intended_query",
    )
    return truth.select(
        "template_id", "query", *FILTER_COLUMNS, "kind", "true_category", "true_brand",
        success_probability(seed).alias("p_success"),
        "in_stock", "reformulates", "reformulation_kind", "intended_query",
    )


def zipf_template(u: Column, n_queries: int) -> Column:
    """Template id with P(k) proportional to log((k+2)/(k+1)), about 1/(k+1): Zipf with s=1."""
    raw = F.floor(F.exp(u * math.log(n_queries + 1))) - 1
    return F.least(F.greatest(raw, F.lit(0)), F.lit(n_queries - 1)).cast("long")


def session_starts(seed: int, block: Column) -> Column:
    """Bit mask of the positions 1-15 of `block` that start a new session, each with probability
    1/4 (two hash bit masks ANDed)."""
    low_bits = (1 << (1 << SESSION_BLOCK_BITS)) - 2
    return (
        F.xxhash64(block, F.lit(seed).cast("long"), F.lit(40).cast("long"))
        .bitwiseAND(F.xxhash64(block, F.lit(seed).cast("long"), F.lit(41).cast("long")))
        .bitwiseAND(F.lit(low_bits).cast("long"))
    )


def event_offset(seed: int, eid: Column) -> Column:
    """Seconds of event `eid` after its block's session start: 45 s a position plus jitter."""
    pos = eid.bitwiseAND((1 << SESSION_BLOCK_BITS) - 1)
    return pos * EVENT_GAP_SECONDS + F.floor(uniform(seed, 47, eid) * (EVENT_GAP_SECONDS - 5))


def session_columns(
    seed: int, n_events: int, start: str, days: int, offset: Column
) -> list[Column]:
    """session_id, user_id and ts for events grouped into sessions inside blocks of 16 events.

    Within a block, each position after the first starts a new session with probability 1/4
    (`session_starts`), so sessions hold 1-16 consecutive events, about 3.4 on average; `offset`
    is the event's seconds after the block's start.
    """
    eid = F.col("event_id")
    block = F.shiftright(eid, SESSION_BLOCK_BITS)
    pos = eid.bitwiseAND((1 << SESSION_BLOCK_BITS) - 1)
    upto = F.pow(F.lit(2.0), pos + 1).cast("long") - 1
    sub = F.bit_count(session_starts(seed, block).bitwiseAND(upto))

    def session_u(salt: int) -> Column:
        return uniform(seed, salt, block, sub)

    n_users = max(1, n_events // 12)
    user = F.floor(F.pow(session_u(43), 1.5) * n_users).cast("long")
    day = F.floor(session_u(44) * days)
    time_of_day = F.pmod((session_u(45) + session_u(46)) / 2 + 0.25, F.lit(1.0))
    usable = DAY_SECONDS - BLOCK_SPAN_SECONDS
    seconds = day * DAY_SECONDS + F.floor(time_of_day * usable) + offset
    epoch = F.to_timestamp(F.lit(start)).cast("long")
    session_hash = F.xxhash64(block, sub, F.lit(seed).cast("long"), F.lit(42).cast("long"))
    return [
        F.lower(F.lpad(F.hex(session_hash), 16, "0")).alias("session_id"),
        F.format_string("u%08d", user).alias("user_id"),
        F.timestamp_seconds(epoch + seconds.cast("long")).alias("ts"),
    ]


def continues(seed: int, eid: Column, n_events: int) -> Column:
    """Whether event `eid` exists and is in the same session as event `eid - 1`."""
    pos = eid.bitwiseAND((1 << SESSION_BLOCK_BITS) - 1)
    starts = session_starts(seed, F.shiftright(eid, SESSION_BLOCK_BITS))
    bit = F.pow(F.lit(2.0), pos).cast("long")
    return (pos > 0) & (eid < n_events) & (starts.bitwiseAND(bit) == 0)


def template_outcomes(catalogue: DataFrame, seed: int) -> DataFrame:
    """The catalogue with each search's typical result count, for the join."""
    n_filters = sum(F.col(c).isNotNull().cast("int") for c in FILTER_COLUMNS)
    lo = F.log(lookup({k: float(v[0]) for k, v in RESULT_RANGE.items()}, F.col("kind"), 10.0))
    hi = F.log(lookup({k: float(v[1]) for k, v in RESULT_RANGE.items()}, F.col("kind"), 500.0))
    u = uniform(seed, 50, search_key(F.col("query")))
    base = F.exp(lo + u * (hi - lo)) / (1 + n_filters)
    return catalogue.select(
        "template_id", "query", *FILTER_COLUMNS, "kind", "p_success", "in_stock",
        F.greatest(F.floor(base), F.lit(1)).cast("int").alias("results_base"),
    )


def outcome_columns(seed: int, behaviour: Behaviour) -> list[Column]:
    """results_shown, clicks, add_to_bags and purchases drawn per event from the template's truth;
    a typing fragment (`fragment`) gets no click."""
    eid = F.col("event_id")

    def u(salt: int) -> Column:
        return uniform(seed, salt, eid)

    def geometric(salt: int, mean: float) -> Column:
        return F.floor(-F.log(1.0 - u(salt)) * mean)

    success = ~F.col("fragment") & succeeded(seed, eid, F.col("p_success"))
    clicked = success & (u(69) >= behaviour.satisfied_no_click_rate)
    shown = F.greatest(F.floor(F.col("results_base") * (0.9 + 0.2 * u(61))), F.lit(1))
    results_shown = F.when(F.col("in_stock"), shown).otherwise(F.lit(0))
    clicks = F.when(clicked, F.least(1 + geometric(63, 1.3), F.lit(12), F.col("results_shown")))
    stray = F.when(~success & ~F.col("fragment") & (F.col("results_shown") > 0)
                   & (u(64) < STRAY_CLICK_RATE), 1).otherwise(0)
    bag_rate = F.when(F.col("kind").isin("brand_category", "product_line"), 0.45).otherwise(0.3)
    bags = F.when(clicked & (u(65) < bag_rate), F.least(F.col("clicks"), 1 + geometric(66, 0.5)))
    buys = F.when(F.col("add_to_bags") > 0, F.least(F.col("add_to_bags"), 1 + geometric(68, 0.3)))
    return [
        results_shown.cast("int").alias("results_shown"),
        F.coalesce(clicks, stray).cast("int").alias("clicks"),
        F.coalesce(bags, F.lit(0)).cast("int").alias("add_to_bags"),
        F.when(u(67) < 0.45, F.coalesce(buys, F.lit(0))).otherwise(0).cast("int")
        .alias("purchases"),
    ]


def succeeded(seed: int, eid: Column, p_success: Column) -> Column:
    """Whether search event `eid` of a template with `p_success` satisfies the user."""
    return uniform(seed, 60, eid) < p_success


def session_roles(seed: int, n_events: int, behaviour: Behaviour) -> tuple[Column, Column]:
    """(reformulation, fragment) flags per event from its neighbours' base draws; `fragment`
    reads the `reformulation` column.

    Event i reformulates event i-1 when i-1 failed, has a reformulation, is in the same session,
    is no fragment candidate and is no reformulation candidate itself (so i-1 is a plain search
    and chains stop at two); event i is a prefix of event i+1 when i+1 is no fragment candidate.
    """
    eid = F.col("event_id")

    def coin(salt: int, rate: float, at: Column) -> Column:
        return uniform(seed, salt, at) < rate

    def fragment_coin(at: Column) -> Column:
        return coin(110, behaviour.fragment_rate, at)

    def rewrites(at: Column, prev: str) -> Column:
        return (continues(seed, at, n_events) & ~fragment_coin(at - 1)
                & coin(111, behaviour.reformulate_rate, at) & F.col(f"{prev}_reformulable")
                & ~succeeded(seed, at - 1, F.col(f"{prev}_p_success")))

    reformulation = rewrites(eid, "prev") & ~rewrites(eid - 1, "prev2")
    fragment = (continues(seed, eid + 1, n_events) & fragment_coin(eid)
                & ~fragment_coin(eid + 1) & ~F.col("reformulation"))
    return reformulation, fragment


def prefix(query: Column, u: Column) -> Column:
    """The first 30-80% of the typed characters, at least one, never all."""
    n = F.length(F.rtrim(query))
    cut = F.least(n - 1, F.greatest(F.lit(1), F.floor(n * (0.3 + 0.5 * u)).cast("int")))
    return F.when(n > 1, F.substring(query, F.lit(1), cut)).otherwise(query)


def generate_events(
    spark: SparkSession,
    catalogue: DataFrame,
    n_events: int,
    seed: int,
    start: str = "2026-10-01",
    days: int = 28,
    *,
    behaviour: Behaviour | None = None,
    num_partitions: int | None = None,
) -> DataFrame:
    """One row per search event over `catalogue`, Zipf over its typed templates, with
    reformulations, typing fragments and no-click satisfied searches as in `behaviour`.

    Rows depend only on the arguments (not on `num_partitions`, which defaults to one partition
    per 2M events); `ts` is wall-clock time from `start` in the session time zone.
    """
    if n_events < 1:
        raise ValueError(f"n_events must be >= 1, got {n_events}")
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    behaviour = behaviour or Behaviour()
    n_queries = catalogue.where(F.col("reformulates").isNull()).count()
    if num_partitions is None:
        per_partition = -(-n_events // EVENTS_PER_PARTITION)
        num_partitions = max(default_parallelism(spark), per_partition)
    eid = F.col("event_id")

    def template(at: Column) -> Column:
        return zipf_template(uniform(seed, 101, at), n_queries)

    drawn = spark.range(0, n_events, 1, num_partitions).withColumnRenamed(
        "id", "event_id").select(
        eid,
        template(eid).alias("t_this"), template(eid - 1).alias("t_prev"),
        template(eid - 2).alias("t_prev2"), template(eid + 1).alias("t_next"),
    )
    failing = catalogue.select(
        "template_id", "p_success",
        F.col("reformulation_kind").isNotNull().alias("reformulable"),
    )
    for name in ("prev", "prev2"):
        side = failing.select(*[F.col(c).alias(f"{name}_{c}") for c in failing.columns])
        drawn = drawn.join(F.broadcast(side), F.col(f"t_{name}") == F.col(f"{name}_template_id"))
    reformulation, fragment = session_roles(seed, n_events, behaviour)
    roled = drawn.select("event_id", "t_this", "t_prev", "t_next",
                         reformulation.alias("reformulation"))
    roled = roled.select("*", fragment.alias("fragment"))
    lo, hi = REFORMULATION_DELAY_SECONDS
    delay = lo + F.floor(uniform(seed, 112, eid) * (hi - lo + 1))
    lead_lo, lead_hi = FRAGMENT_LEAD_SECONDS
    lead = lead_lo + F.floor(uniform(seed, 113, eid) * (lead_hi - lead_lo + 1))
    is_ref, is_frag = F.col("reformulation"), F.col("fragment")
    roled = roled.select(
        "event_id", "fragment",
        F.when(is_ref, F.col("t_prev") + n_queries).when(is_frag, F.col("t_next"))
        .otherwise(F.col("t_this")).alias("template_id"),
        F.when(is_ref, event_offset(seed, eid - 1) + delay)
        .when(is_frag, event_offset(seed, eid + 1) - lead)
        .otherwise(event_offset(seed, eid)).alias("offset"),
    )
    events = roled.select(
        "event_id", "template_id", "fragment",
        *session_columns(seed, n_events, start, days, F.col("offset")),
    )
    joined = events.join(F.broadcast(template_outcomes(catalogue, seed)), "template_id")
    results_shown, clicks, bags, buys = outcome_columns(seed, behaviour)
    staged = joined.withColumn("results_shown", results_shown).withColumn("clicks", clicks)
    staged = staged.withColumn("add_to_bags", bags).withColumn("purchases", buys)
    typed = F.when(F.col("fragment"), prefix(F.col("query"), uniform(seed, 114, eid)))
    return staged.select(
        "event_id", "session_id", "user_id", "ts",
        F.coalesce(typed, F.col("query")).alias("query"), *FILTER_COLUMNS,
        "results_shown", "clicks", "add_to_bags", "purchases",
    )

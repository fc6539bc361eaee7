import numpy as np
import pandas as pd
import pytest
from pyspark.ml import PipelineModel
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from sklearn.metrics import roc_auc_score

from querylens.success.metrics import binary_metrics, calibration_table
from querylens.success.model import SuccessMLP, SuccessScorer, score_column

SMALL = {"hidden_sizes": (16,), "max_epochs": 40, "patience": 4, "batch_size": 64,
         "n_threads": 1}


def planted(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = np.zeros(d)
    w[:3] = [2.0, -1.5, 1.0]
    y = (x @ w + 0.3 * rng.normal(size=n) > 0.4).astype(int)
    return x, y


def test_learns_a_planted_signal_and_not_shuffled_labels() -> None:
    x, y = planted(1600, 12, seed=3)
    model = SuccessMLP(**SMALL, random_state=0).fit(x[:1200], y[:1200])
    p = model.predict_proba(x[1200:])[:, 1]
    assert roc_auc_score(y[1200:], p) > 0.9
    assert model.best_epoch_ >= 1 and len(model.history_) <= 40
    shuffled = np.random.default_rng(9).permutation(y)
    noise = SuccessMLP(**SMALL, random_state=0).fit(x[:1200], shuffled[:1200])
    auc = roc_auc_score(shuffled[1200:], noise.predict_proba(x[1200:])[:, 1])
    assert 0.4 < auc < 0.6


def test_same_seed_same_model_and_bytes_roundtrip() -> None:
    x, y = planted(400, 6, seed=1)
    a = SuccessMLP(**{**SMALL, "max_epochs": 3}, random_state=5).fit(x, y)
    b = SuccessMLP(**{**SMALL, "max_epochs": 3}, random_state=5).fit(x, y)
    assert a.version_ == b.version_
    again = SuccessMLP.from_bytes(a.to_bytes())
    np.testing.assert_array_equal(again.predict_proba(x), a.predict_proba(x))
    assert again.version_ == a.version_


def test_single_class_and_bad_input_are_refused() -> None:
    x, _ = planted(50, 4, seed=2)
    with pytest.raises(ValueError, match="single class"):
        SuccessMLP(**SMALL).fit(x, np.ones(50))
    with pytest.raises(ValueError, match="binary"):
        SuccessMLP(**SMALL).fit(x, np.arange(50))
    with pytest.raises(ValueError, match="backend"):
        SuccessMLP(**SMALL, backend="gpu-cluster").fit(x, np.arange(50) % 2)


def test_torch_distributor_trains_with_two_processes(spark: SparkSession) -> None:
    x, y = planted(800, 8, seed=4)
    model = SuccessMLP(hidden_sizes=(8,), max_epochs=10, patience=3, batch_size=64,
                       learning_rate=0.03,
                       backend="distributor", num_processes=2, random_state=0)
    model.fit(x[:600], y[:600])
    assert model.world_size_ == 2
    assert roc_auc_score(y[600:], model.predict_proba(x[600:])[:, 1]) > 0.85


def test_pandas_udf_and_transformer_match_numpy_scoring(spark: SparkSession, tmp_path) -> None:
    x, y = planted(300, 5, seed=6)
    extra = np.linspace(0, 1, 300)
    features = np.column_stack([x, extra]).astype(np.float32)
    model = SuccessMLP(**{**SMALL, "max_epochs": 3}).fit(features, y)
    expected = model.predict_proba(features)[:, 1]
    frame = pd.DataFrame({"id": np.arange(300), "embedding": list(x.astype(np.float32)),
                          "rate": extra})
    df = spark.createDataFrame(frame, "id long, embedding array<float>, rate double")
    got = df.select("id", score_column(model, F.col("embedding"), F.col("rate"),
                                       batch_size=64).alias("p")).toPandas().sort_values("id")
    np.testing.assert_allclose(got["p"].to_numpy(), expected, rtol=1e-6, atol=1e-7)
    folder = model.save(tmp_path / "models")
    scorer = SuccessScorer(modelPath=str(folder), extraCols=["rate"])
    pipeline = PipelineModel(stages=[scorer])
    pipeline.write().overwrite().save(str(tmp_path / "pipeline"))
    loaded = PipelineModel.load(str(tmp_path / "pipeline"))
    out = loaded.transform(df).select("id", "p_success").toPandas().sort_values("id")
    np.testing.assert_allclose(out["p_success"].to_numpy(), expected, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="lacks column rate"):
        scorer.transform(df.drop("rate"))


def test_metrics_leave_out_undefined_auc_and_bin_calibration() -> None:
    y = np.array([1, 1, 1, 1])
    p = np.array([0.9, 0.8, 0.7, 0.1])
    rows, notes = binary_metrics("m", "test", y, p)
    names = {r[2]: r[3] for r in rows}
    assert "roc_auc" not in names and "one class" in notes[0]
    assert names["brier"] == pytest.approx(np.mean((p - y) ** 2))
    table = calibration_table("m", "test", np.array([0, 1, 1, 0]), np.array([0.05, 0.95, 1.0,
                                                                             0.5]), 10)
    assert table["n"].tolist() == [1, 1, 2]
    assert table["observed_rate"].tolist() == [0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="NaN"):
        binary_metrics("m", "test", y, np.array([0.1, np.nan, 0.2, 0.3]))

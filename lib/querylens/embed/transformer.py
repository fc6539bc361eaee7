"""`QueryEmbedder`: the embedding UDF as a saveable `pyspark.ml` Transformer."""

from __future__ import annotations

from typing import Any

from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from querylens.embed.encoders import DTYPES
from querylens.embed.onnx import BACKENDS, QUANTIZE
from querylens.embed.udf import embed_column


class QueryEmbedder(Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable,
                    DefaultParamsWritable):
    """Adds `outputCol` (array<float>) with the embedding of the text in `inputCol`.

    `model` is `minilm`, a CLIP checkpoint (folder or cached hub id) or a sentence-transformers
    model; null or blank texts get a null embedding.
    """

    model: Param[str] = Param(
        Params._dummy(), "model", "minilm, a CLIP checkpoint or a sentence-transformers model",
        typeConverter=TypeConverters.toString)
    batchSize: Param[int] = Param(
        Params._dummy(), "batchSize", "texts per forward pass", typeConverter=TypeConverters.toInt)
    device: Param[str] = Param(
        Params._dummy(), "device", "auto (the task's GPU, else CUDA, else CPU), cpu or cuda",
        typeConverter=TypeConverters.toString)
    dtype: Param[str] = Param(
        Params._dummy(), "dtype", "GPU precision: auto, float32, float16 or bfloat16",
        typeConverter=TypeConverters.toString)
    normalize: Param[bool] = Param(
        Params._dummy(), "normalize", "L2-normalise the embeddings",
        typeConverter=TypeConverters.toBoolean)
    cudaGraphs: Param[bool] = Param(
        Params._dummy(), "cudaGraphs", "replay CUDA graphs for CLIP on a GPU",
        typeConverter=TypeConverters.toBoolean)
    backend: Param[str] = Param(
        Params._dummy(), "backend", "torch, onnx (CPU, checked against torch) or auto",
        typeConverter=TypeConverters.toString)
    quantize: Param[str] = Param(
        Params._dummy(), "quantize", "ONNX precision: none or int8",
        typeConverter=TypeConverters.toString)

    @keyword_only
    def __init__(self, *, inputCol: str = "query", outputCol: str = "embedding",
                 model: str = "minilm", batchSize: int = 256, device: str = "auto",
                 dtype: str = "auto", normalize: bool = True, cudaGraphs: bool = False,
                 backend: str = "torch", quantize: str = "none"):
        super().__init__()
        self._setDefault(inputCol="query", outputCol="embedding", model="minilm", batchSize=256,
                         device="auto", dtype="auto", normalize=True, cudaGraphs=False,
                         backend="torch", quantize="none")
        self.setParams(**self._input_kwargs)  # type: ignore[attr-defined]

    @keyword_only
    def setParams(self, *, inputCol: str = "query", outputCol: str = "embedding",
                  model: str = "minilm", batchSize: int = 256, device: str = "auto",
                  dtype: str = "auto", normalize: bool = True, cudaGraphs: bool = False,
                  backend: str = "torch", quantize: str = "none") -> QueryEmbedder:
        """Set any of the params by keyword."""
        kwargs: dict[str, Any] = self._input_kwargs  # type: ignore[attr-defined]
        return self._set(**kwargs)

    def setInputCol(self, value: str) -> QueryEmbedder:
        return self._set(inputCol=value)

    def setOutputCol(self, value: str) -> QueryEmbedder:
        return self._set(outputCol=value)

    def getModel(self) -> str:
        return self.getOrDefault(self.model)

    def getBatchSize(self) -> int:
        return self.getOrDefault(self.batchSize)

    def getDevice(self) -> str:
        return self.getOrDefault(self.device)

    def getDtype(self) -> str:
        return self.getOrDefault(self.dtype)

    def getNormalize(self) -> bool:
        return self.getOrDefault(self.normalize)

    def getCudaGraphs(self) -> bool:
        return self.getOrDefault(self.cudaGraphs)

    def getBackend(self) -> str:
        return self.getOrDefault(self.backend)

    def getQuantize(self) -> str:
        return self.getOrDefault(self.quantize)

    def check(self, dataset: DataFrame) -> None:
        """Fail early, naming the param or column, on settings the UDF would reject later."""
        column = self.getInputCol()
        if column not in dataset.columns:
            raise ValueError(
                f"QueryEmbedder inputCol {column!r} is not a column; columns: {dataset.columns}"
            )
        if self.getBatchSize() < 1:
            raise ValueError(f"QueryEmbedder batchSize must be >= 1, got {self.getBatchSize()}")
        if self.getDtype() not in DTYPES:
            raise ValueError(
                f"QueryEmbedder dtype must be one of {DTYPES}, got {self.getDtype()!r}")
        device = self.getDevice()
        if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
            raise ValueError(f"QueryEmbedder device must be auto, cpu or cuda, got {device!r}")
        if self.getBackend() not in BACKENDS:
            raise ValueError(
                f"QueryEmbedder backend must be one of {BACKENDS}, got {self.getBackend()!r}")
        if self.getQuantize() not in QUANTIZE:
            raise ValueError(
                f"QueryEmbedder quantize must be one of {QUANTIZE}, got {self.getQuantize()!r}")

    def _transform(self, dataset: DataFrame) -> DataFrame:
        self.check(dataset)
        embeddings = embed_column(
            F.col(f"`{self.getInputCol()}`"), self.getModel(), self.getDevice(),
            self.getNormalize(), self.getBatchSize(), self.getDtype(), self.getCudaGraphs(),
            self.getBackend(), self.getQuantize(),
        )
        return dataset.withColumn(self.getOutputCol(), embeddings)

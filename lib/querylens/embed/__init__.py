"""Query embeddings: encoders, the Spark UDF and the embedding cache."""

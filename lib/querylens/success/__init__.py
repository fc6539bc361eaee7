"""Success labels, the success model, its metrics and recommendations."""

"""r2r: Route-to-Rerank, domain LoRA experts for decoder-only rerankers."""

__version__ = "0.1.0"

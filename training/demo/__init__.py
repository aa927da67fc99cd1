"""The offline demo model: a tiny XLM-R pair classifier trained on the project's own corpus.

`corpus` and `pairs` are pure Python; only `builder` imports torch and transformers, so import it
explicitly (`from training.demo.builder import build_demo_checkpoint`) where a model is wanted.
"""

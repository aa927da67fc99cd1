"""Seeded multilingual perturbations and robustness statistics (pure Python, no web or ML imports)."""

"""regfree: regression-free model updates.

Rooms: :mod:`regfree.metrics` (flip metrics, numpy only), :mod:`regfree.pctraining`
(positive-congruent training), :mod:`regfree.compat` (backward-compatible embeddings),
:mod:`regfree.retrieval` (FAISS galleries across model versions), :mod:`regfree.data`
(offline datasets) and :mod:`regfree.training` (the one trainer they share).
"""

__version__ = "0.1.0"

__all__ = ["UpgradeReport", "evaluate_upgrade"]


def __getattr__(name: str):
    # Imported on first use: `import regfree.metrics` must stay free of torch.
    if name in __all__:
        from regfree import upgrade

        return getattr(upgrade, name)
    raise AttributeError(f"module 'regfree' has no attribute {name!r}")

"""regfree: regression-free model updates.

Rooms: :mod:`regfree.metrics` (flip metrics, numpy only), :mod:`regfree.pctraining`
(positive-congruent training), :mod:`regfree.compat` (backward-compatible embeddings),
:mod:`regfree.retrieval` (FAISS galleries across model versions), :mod:`regfree.data`
(offline datasets) and :mod:`regfree.training` (the one trainer they share).
"""

__version__ = "0.1.0"

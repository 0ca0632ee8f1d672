"""The whole story on embedded data: ``make demo`` / ``regfree demo``.

:class:`DemoConfig` holds the knobs; :func:`regfree.demo.run.main` trains v1 and three v2s on
mnist1d and reports flips and retrieval, then plain v2 with no retraining through an embedding
adapter and a blend with v1 (:mod:`regfree.demo.posthoc`; both imported lazily: they need torch).

Example:
    >>> DemoConfig(samples=600).new_epochs
    30
"""

from regfree.demo.config import DemoConfig

__all__ = ["DemoConfig"]

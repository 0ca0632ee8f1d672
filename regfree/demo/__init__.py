"""The whole story on embedded data: ``make demo`` / ``regfree demo``.

:class:`DemoConfig` holds the knobs; :func:`regfree.demo.run.main` trains v1 and three v2s on
mnist1d and reports flips and retrieval (imported lazily: it needs torch).

Example:
    >>> DemoConfig(samples=600).new_epochs
    30
"""

from regfree.demo.config import DemoConfig

__all__ = ["DemoConfig"]

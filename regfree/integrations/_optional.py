"""Import an optional library, or say which regfree extra installs it."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module``; when it is missing, raise an ImportError that names the extra.

    Args:
        module: the library's import name (e.g. ``"torchmetrics"``).
        extra: the regfree extra that installs it (e.g. ``"torchmetrics"``).
        feature: what needs it, for the message (e.g. ``"regfree.integrations.torchmetrics"``).

    Returns:
        The imported module.

    Example:
        >>> require("json", "none", "this example").__name__
        'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"{feature} needs the {module} package, which is not installed: "
                          f"pip install 'regfree[{extra}]'") from error

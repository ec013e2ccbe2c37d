"""Optional dependencies: import one on use, or say which ``pip install`` line provides it.

kan-jax needs only jax, flax, optax and numpy. SymPy and matplotlib come with the
``interpret`` extra, tensorflow-datasets with ``data``, tqdm with ``progress``; the modules
that use them call :func:`require` where they need them, so ``import kan_jax`` never loads
them.
"""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``, or raise an ImportError naming the extra that installs it.

    Args:
        module: The module's import name, e.g. ``"sympy"`` or ``"matplotlib.pyplot"``.
        extra: The kan-jax extra that provides it, e.g. ``"interpret"``.

    Returns:
        The imported module.

    Raises:
        ImportError: If ``module`` cannot be imported; the message holds the ``pip install``
            line and the original error is chained.

    Examples:
        >>> from kan_jax._optional import require
        >>> require("json", "dev").dumps([1])
        '[1]'
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        raise ImportError(
            f"{top} is needed here but cannot be imported ({err}); "
            f'install it with: pip install "kan-jax[{extra}]"'
        ) from err

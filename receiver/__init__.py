"""receiver: a delivery-tracking sidecar for SMS status callbacks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "create_app"]

if TYPE_CHECKING:
    from receiver.app import create_app


def __getattr__(name: str) -> Any:
    # Lazy, so `import receiver` (and reading the version at build time) stays light.
    if name == "create_app":
        from receiver.app import create_app

        return create_app
    raise AttributeError(name)

"""receiver: a delivery-tracking sidecar for SMS status callbacks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from receiver.version import __version__

__all__ = ["__version__", "create_app"]

if TYPE_CHECKING:
    from receiver.app import create_app


def __getattr__(name: str) -> Any:
    # Lazy, so `import receiver` (and any one module of it) does not load the whole app.
    if name == "create_app":
        from receiver.app import create_app

        return create_app
    raise AttributeError(name)

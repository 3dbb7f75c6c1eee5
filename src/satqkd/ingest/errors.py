"""The one exception of the ingest stage."""

from __future__ import annotations

__all__ = ["IngestError", "require"]


class IngestError(ValueError):
    """Bad input file, channel map or transmitter description (the CLI exits 2 with its message)."""


def require(module: str):
    """Import an optional dependency of the ``[data]`` extra, or raise :class:`IngestError` naming it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise IngestError(
            f"{module} is needed for this file format: install the data extra, pip install 'satqkd[data]'"
        ) from exc

"""Kept for imports written before the names moved to :mod:`jupyter_securehpc.vocabulary.names`; use that."""

from ..vocabulary.names import MAX_LENGTH, InvalidName, name_key, validate_name

__all__ = ["MAX_LENGTH", "InvalidName", "name_key", "validate_name"]

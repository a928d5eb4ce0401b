"""Roles a member has in a project (one principal per user per project, as in Hopsworks)."""

from __future__ import annotations

import enum


class Role(str, enum.Enum):
    DATA_OWNER = "data_owner"
    DATA_SCIENTIST = "data_scientist"
    OBSERVER = "observer"

    @classmethod
    def parse(cls, value: str) -> Role:
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(role.value for role in cls)
            raise ValueError(f"unknown role {value!r}: use one of {allowed}") from None

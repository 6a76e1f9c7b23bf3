"""The roles, on their own so config validation and the permission table (core/rbac.py) share one list."""
from __future__ import annotations

from enum import Enum


class Role(str, Enum):
    ADMIN = "admin"
    MANAGER = "manager"
    OPERATOR = "operator"
    VIEWER = "viewer"


ROLES: tuple[str, ...] = tuple(r.value for r in Role)
"""The role names, most powerful first (config `access`, console users)."""

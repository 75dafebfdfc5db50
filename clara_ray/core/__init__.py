"""Core: jobs, payloads, pipelines and results; SQLite is the source of truth.

Its records and verbs, which its callers share, are in :mod:`clara_ray.contracts`.
"""

from clara_ray.core.service import CoreService
from clara_ray.core.store import SQLiteStore, Store

__all__ = ["CoreService", "SQLiteStore", "Store"]

"""Stage 1 — spec: a YAML cluster spec becomes a validated, typed model.

Structure and types are checked by pydantic (`model`: unknown keys are errors, so
typos are caught); the rules that span several fields (one NFS server, 1 or 3
managers, the hub on a manager, ...) are checked afterwards (`rules`) so that
*every* problem is reported at once (`problems`), each with its key path, the
spec line it comes from, and a hint how to fix it. `load` reads the YAML.
"""

from __future__ import annotations

from .load import InputFileError, load_spec, read_input
from .model import (
    LETSENCRYPT_PRODUCTION, Cluster, Docker, EngineSource, Host, Hub, Image, ImageSource, LoadedSpec, Role, Seed,
    Share, Storage, StorageDriver, Swarm, TLSMode, Variant, memory_bytes,
)
from .problems import Problem, SpecError, excerpt

__all__ = [
    "LETSENCRYPT_PRODUCTION", "Cluster", "Docker", "EngineSource", "Host", "Hub", "Image", "ImageSource",
    "InputFileError", "LoadedSpec", "Problem", "Role", "Seed", "Share", "SpecError", "Storage", "StorageDriver",
    "Swarm", "TLSMode", "Variant", "excerpt", "load_spec", "memory_bytes", "read_input",
]

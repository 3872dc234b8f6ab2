"""cablab-cluster: one cluster spec → validated model → per-host shell provisioners.

Stages, each a module, each importing only the ones before it:
spec → plan → render (+ secretstore) → cli.
"""

__version__ = "0.1.0"

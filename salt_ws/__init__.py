"""salt_ws: the Salt master event bus over websockets, served by a Salt engine.

The ``ws`` engine (``_engines/ws.py``) runs inside the salt-master and serves
saltnado's websocket API (``POST /login``, ``/all_events/<token>``) without
salt-api. This package holds all the logic; the loader modules only adapt.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"

"""What the master knows about its minions: accepted keys, cached grains, connections.

A Salt edge, blocking (disk, cache drivers): the engine calls it off its
loop. Grains come from the master's minion data cache, which the master
refreshes whenever a minion compiles its pillar (at start and on
``saltutil.refresh_grains``/``refresh_pillar``) and announces with a
``minion/refresh/<id>`` event. So the formatted view never runs a job to
learn grains, and needs no ``netapi_enable_clients``.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Iterable, Mapping

__all__ = ["Fleet"]

log = logging.getLogger(__name__)


class Fleet:
    """Read-only access to the master's minion knowledge.

    Args:
        opts: the master's opts.
    """

    def __init__(self, opts: Mapping[str, Any]) -> None:
        import salt.cache  # pylint: disable=import-outside-toplevel
        import salt.key  # pylint: disable=import-outside-toplevel
        import salt.utils.minions  # pylint: disable=import-outside-toplevel

        self._opts = dict(opts)
        self._cache = salt.cache.factory(self._opts)
        self._keys = salt.key.get_key(self._opts)
        self._ckminions = salt.utils.minions.CkMinions(self._opts)
        self.data_cache = bool(self._opts.get("minion_data_cache", True))

    def accepted(self) -> list[str]:
        """Ids of minions whose keys are accepted."""
        return list(self._keys.list_status("accepted").get("minions", []))

    def connected(self) -> set[str]:
        """Ids of minions connected now (Salt's presence detection)."""
        return set(self._ckminions.connected_ids())

    def grains(self, mid: str) -> dict[str, Any] | None:
        """Cached grains of ``mid``, or None if the cache has none."""
        if not self.data_cache:
            return None
        try:
            grains = self._cache.fetch("grains", mid)  # Salt >= 3008 layout
            if not grains:
                data = self._cache.fetch(f"minions/{mid}", "data")  # Salt 3007 layout
                grains = data.get("grains") if isinstance(data, dict) else None
        except Exception as exc:  # pylint: disable=broad-except
            log.debug("salt_ws: no cached grains for %s: %s", mid, exc)
            return None
        return dict(grains) if isinstance(grains, dict) and grains else None

    def load_grains(self, mids: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        """Cached grains of several minions."""
        return {mid: self.grains(mid) for mid in mids}

    def syndics(self) -> list[str]:
        """Syndics that have returned to this master (Salt marks them in ``cachedir/syndics``)."""
        try:
            return sorted(os.listdir(os.path.join(self._opts["cachedir"], "syndics")))
        except OSError:
            return []

    def resolve(self, targets: Iterable[str]) -> dict[str, set[str]]:
        """Minions matched now by each compound target expression of an ACL."""
        resolved = {}
        for target in targets:
            try:
                found = self._ckminions.check_minions(target, "compound")
                resolved[target] = set(found.get("minions", []))
            except Exception:  # pylint: disable=broad-except
                log.warning("salt_ws: cannot resolve ACL target %r", target, exc_info=True)
                resolved[target] = set()
        return resolved

    def seed(self) -> dict[str, dict[str, Any] | None]:
        """The fleet at engine start: accepted and connected minions with cached grains."""
        accepted = self.accepted()
        try:
            connected = self.connected()
        except Exception as exc:  # pylint: disable=broad-except
            log.debug("salt_ws: presence check failed at start: %s", exc)
            connected = set(accepted)
        return self.load_grains(mid for mid in accepted if mid in connected)

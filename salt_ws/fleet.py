"""What the master knows about its minions: accepted keys, cached grains, connections.

A Salt edge, blocking (disk, cache drivers): the engine calls it off its
loop. Grains come from the master's minion data cache, which the master
refreshes whenever a minion compiles its pillar (at start and on
``saltutil.refresh_grains``/``refresh_pillar``) and announces with a
``minion/refresh/<id>`` event. So the formatted view never runs a job to
learn grains, and needs no ``netapi_enable_clients``.

Trust: the ids this module is asked about come, in the end, from bus events,
which any minion can forge (issue 9). The localfs cache builds a file path
from the id and reads any ``.p`` file that decodes, so an id such as
``../minions/<id>/data`` would read another minion's Salt 3007 data-cache file
(pillar) as "grains". :meth:`Fleet.grains` therefore reads the cache only for
an id that passes Salt's own ``salt.utils.verify.valid_id`` and holds an
accepted key on this master at the time of the read; no cache path is built
from anything else. Syndics are listed only if they hold an accepted key.
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
        import salt.utils.verify  # pylint: disable=import-outside-toplevel

        self._ckminions = salt.utils.minions.CkMinions(self._opts)
        self._valid_id = salt.utils.verify.valid_id
        self.data_cache = bool(self._opts.get("minion_data_cache", True))

    def accepted(self) -> list[str]:
        """Ids of minions whose keys are accepted."""
        return list(self._keys.list_status("accepted").get("minions", []))

    def valid_id(self, mid: Any) -> bool:
        """Salt's own rule for a minion id (``salt.utils.verify.valid_id``)."""
        return isinstance(mid, str) and bool(mid) and bool(self._valid_id(self._opts, mid))

    def is_accepted(self, mid: str) -> bool:
        """Does ``mid`` (a valid id) hold an accepted key now?"""
        cache = getattr(self._keys, "cache", None)  # Salt >= 3008: keys behind a cache driver
        if cache is None:  # Salt 3007: accepted keys are files in pki_dir/minions
            cluster = self._opts.get("cluster_id") is not None
            pki_dir = self._opts["cluster_pki_dir" if cluster else "pki_dir"]
            return os.path.isfile(os.path.join(pki_dir, "minions", mid))
        try:
            key = cache.fetch("keys", mid)
        except Exception as exc:  # pylint: disable=broad-except
            log.debug("salt_ws: cannot read the key of %r: %s", mid, exc)
            return False
        return isinstance(key, dict) and key.get("state") == "accepted"

    def connected(self) -> set[str]:
        """Ids of minions connected now (Salt's presence detection)."""
        return set(self._ckminions.connected_ids())

    def grains(self, mid: str, accepted: set[str] | None = None) -> dict[str, Any] | None:
        """Cached grains of ``mid``, or None if the cache has none.

        None as well, without touching the cache, for an id Salt's ``valid_id``
        refuses or that holds no accepted key (``accepted``: the accepted ids,
        read once by the caller; otherwise this minion's key is read now).
        """
        if not self.data_cache:
            return None
        if not self.valid_id(mid):
            log.debug("salt_ws: not reading grains of invalid minion id %r", mid)
            return None
        if not (mid in accepted if accepted is not None else self.is_accepted(mid)):
            log.debug("salt_ws: not reading grains of %r: no accepted key", mid)
            return None
        try:
            grains = self._cache.fetch("grains", mid)  # Salt >= 3008 layout
            if not grains:
                data = self._cache.fetch(f"minions/{mid}", "data")  # Salt 3007 layout
                grains = data.get("grains") if isinstance(data, dict) else None
        except Exception as exc:  # pylint: disable=broad-except
            log.debug("salt_ws: no cached grains for %r: %s", mid, exc)
            return None
        return dict(grains) if isinstance(grains, dict) and grains else None

    def load_grains(self, mids: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        """Cached grains of several minions (the accepted keys read once for all)."""
        mids = list(mids)
        accepted = set(self.accepted()) if self.data_cache and mids else set()
        return {mid: self.grains(mid, accepted) for mid in mids}

    def syndics(self) -> list[str]:
        """Syndics that have returned to this master (Salt marks them in ``cachedir/syndics``)
        and hold an accepted key here."""
        try:
            found = os.listdir(os.path.join(self._opts["cachedir"], "syndics"))
        except OSError:
            return []
        accepted = set(self.accepted())
        return sorted(sid for sid in found if sid in accepted and self.valid_id(sid))

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
        ordered = self.accepted()
        accepted = set(ordered)
        try:
            connected = self.connected()
        except Exception as exc:  # pylint: disable=broad-except
            log.debug("salt_ws: presence check failed at start: %s", exc)
            connected = accepted
        return {mid: self.grains(mid, accepted) for mid in ordered if mid in connected}

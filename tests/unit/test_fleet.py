"""salt_ws.fleet.Fleet over a real Salt master's key directory and localfs data cache.

Finding 1 of issue 9 at the I/O edge: whatever the view asks, ``Fleet.grains`` reads the cache
only for ids Salt's ``valid_id`` accepts and that hold an accepted key, so a forged id such as
``../minions/<real>/data`` can never make the localfs cache read (and show as grains) another
``.p`` file, e.g. a Salt 3007 data-cache file holding pillar.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import pytest
import salt.cache
import salt.config
import salt.payload

from salt_ws.fleet import Fleet

SECRET = {"pillar": {"password": "hunter2"}, "grains": {"os": "Secret"}}


@pytest.fixture
def master(tmp_path: pathlib.Path) -> dict[str, Any]:
    """A master's opts: pki dir with accepted keys of real and syndic-1, a pending ghost."""
    opts = salt.config.master_config(None)
    for name in ("pki_dir", "cachedir", "sock_dir"):
        opts[name] = str(tmp_path / name)
        (tmp_path / name).mkdir()
    opts["minion_data_cache"] = True
    for state, mids in {"minions": ["real", "syndic-1"], "minions_pre": ["ghost"]}.items():
        keys = pathlib.Path(opts["pki_dir"], state)
        keys.mkdir()
        for mid in mids:
            (keys / mid).write_text("-----BEGIN PUBLIC KEY-----\n")
    cache = salt.cache.factory(opts)
    cache.store("grains", "real", {"os": "Debian"})  # Salt >= 3008 layout
    cache.store("grains", "ghost", {"os": "Ghost"})  # cached, but its key is not accepted
    cache.store("minions/real", "data", SECRET)  # a Salt 3007 data-cache file: pillar
    cache.store("x", "x", {"x": SECRET})  # <cachedir>/x/x.p
    with open(os.path.join(opts["cachedir"], "x.p"), "wb") as out:  # <cachedir>/x.p
        salt.payload.dump(SECRET, out)
    return opts


def test_grains_of_an_accepted_minion_come_from_the_cache(master):
    assert Fleet(master).grains("real") == {"os": "Debian"}


@pytest.mark.parametrize(
    "mid",
    [
        "../minions/real/data",
        "../x",
        "../../x",
        "../x/x",
        "a/b",
        "a\\b",
        "a\0b",
        ".",
        "..",
        "",
        "ghost",  # valid, cached, but no accepted key
        "nobody",  # valid, no key at all
    ],
)
def test_grains_refuses_ids_without_an_accepted_key(master, mid):
    fleet = Fleet(master)
    assert fleet.grains(mid) is None
    assert fleet.load_grains([mid, "real"]) == {mid: None, "real": {"os": "Debian"}}


def test_files_outside_the_minions_entries_are_never_opened(master):
    targets = [
        pathlib.Path(master["cachedir"], "minions", "real", "data.p"),
        pathlib.Path(master["cachedir"], "x.p"),
        pathlib.Path(master["cachedir"], "x", "x.p"),
    ]
    for target in targets:  # atime before mtime: any read updates it (even under relatime)
        os.utime(target, ns=(0, target.stat().st_mtime_ns))
    fleet = Fleet(master)
    for mid in ["../minions/real/data", "../x", "../x/x", "../../x"]:
        assert fleet.grains(mid) is None
    assert [t.stat().st_atime_ns for t in targets] == [0, 0, 0]
    with open(targets[1], "rb") as probe:  # the probe itself works: a read does show
        probe.read()
    assert targets[1].stat().st_atime_ns != 0


def test_the_syndics_listed_are_accepted_keys(master):
    syndics = pathlib.Path(master["cachedir"], "syndics")
    for sid in ("syndic-1", "rogue", ".hidden"):
        (syndics / sid).mkdir(parents=True)
    assert Fleet(master).syndics() == ["syndic-1"]


def test_accepted_and_valid_id(master):
    fleet = Fleet(master)
    assert sorted(fleet.accepted()) == ["real", "syndic-1"]
    assert fleet.valid_id("real") and not fleet.valid_id("../x") and not fleet.valid_id("")

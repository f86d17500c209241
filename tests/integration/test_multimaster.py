"""Multi-master: one minion connected to two masters, each running the engine.

Each engine sees what its own master sees; with ``include_master: True`` every
message names its master, so a client connected to both can merge the streams.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.integration.conftest import (
    Collector,
    EngineMaster,
    start_master,
    wait_listening,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def masters(salt_factories, users_file):
    engine = {"disable_ssl": True, "include_master": True}
    a_factory, a_port = start_master(salt_factories, users_file, dict(engine), auto_accept=True)
    b_factory, b_port = start_master(salt_factories, users_file, dict(engine), auto_accept=True)
    with a_factory.started(start_timeout=120):
        # multi-master minions need the same master key pair on every master
        b_pki = b_factory.config["pki_dir"]
        os.makedirs(b_pki, exist_ok=True)
        for name in ("master.pem", "master.pub"):
            shutil.copy2(os.path.join(a_factory.config["pki_dir"], name), b_pki)
        with b_factory.started(start_timeout=120):
            wait_listening(a_port)
            wait_listening(b_port)
            a, b = EngineMaster(a_factory, a_port), EngineMaster(b_factory, b_port)
            minion = a_factory.salt_minion_daemon(
                "mm-minion",
                overrides={
                    "master": [
                        f"127.0.0.1:{a_factory.config['ret_port']}",
                        f"127.0.0.1:{b_factory.config['ret_port']}",
                    ],
                },
            )
            with minion.started(start_timeout=120):
                yield a, b, minion


def _latest(client: Collector, key: str) -> dict:
    return next((m for m in reversed(list(client.messages)) if key in m), {})


def test_each_engine_shows_the_minion_and_names_its_master(masters):
    a, b, minion = masters
    views = {
        m.factory.id: Collector(f"{m.ws_url}/formatted_events/{m.login()['token']}") for m in (a, b)
    }
    try:
        for master_id, client in views.items():
            wait_until(
                lambda c=client: minion.id in _latest(c, "minions").get("minions", {}),
                60,
                f"{minion.id} in {master_id}'s view",
            )
            message = _latest(client, "minions")
            assert message["master"] == master_id
            assert message["minions"][minion.id]["grains"]["id"] == minion.id
            # the snapshot's jobs table follows its minions table
            jobs = wait_until(lambda c=client: _latest(c, "jobs"), 10, "the jobs table")
            assert jobs["master"] == master_id
    finally:
        for client in views.values():
            client.close()


@pytest.mark.parametrize("publisher", [0, 1], ids=["from-a", "from-b"])
def test_a_job_shows_on_the_master_that_published_it(masters, publisher):
    a, b, minion = masters
    clients = [Collector(f"{m.ws_url}/all_events/{m.login()['token']}") for m in (a, b)]
    try:
        master = (a, b)[publisher]
        ret = master.factory.salt_cli(timeout=60).run("test.ping", minion_tgt=minion.id)
        assert ret.returncode == 0, ret
        client = clients[publisher]
        new = client.wait_for(
            lambda m: m["tag"].endswith("/new") and m["data"]["fun"] == "test.ping"
        )
        jid = new["data"]["jid"]
        returned = client.wait_for(lambda m: m["tag"] == f"salt/job/{jid}/ret/{minion.id}")
        assert new["master"] == returned["master"] == master.factory.id
        assert returned["data"]["return"] is True
    finally:
        for client in clients:
            client.close()

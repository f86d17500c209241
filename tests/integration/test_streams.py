"""Streams (issue 10) on a real master: tag filters, resume, gaps, restarts, heartbeats, SSE.

One master (small ``history_size``, 1 s pings) with one real minion serves every
test; the engine-restart test restarts it and runs last. Heartbeats are shown
through :class:`Proxy`, a tiny asyncio TCP proxy that closes connections idle
for a few seconds (as load balancers do); the same proxy serves the browser
test's page, so that the page, ``/login`` and ``/events`` share one origin, and
cuts the ``/events`` connection to make ``EventSource`` reconnect by itself.
The browser test uses Debian's ``/usr/bin/chromium`` through Playwright; it is
skipped when Chromium is absent, except under CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import socket
import tempfile
import threading
import time
import uuid
from typing import Any, Callable

import pytest
import websocket

from tests.integration.conftest import (
    USERS,
    Collector,
    EngineMaster,
    start_master,
    wait_listening,
    wait_until,
)

pytestmark = pytest.mark.integration

HISTORY = 200  # the master's history_size: small, so that a gap is cheap to make
PING = 2.0  # ping_interval and ping_timeout (small, with room for a loaded 2-core machine)
IDLE = 3.5  # seconds the proxy lets a connection be silent (> PING)
GAP_TAG = "salt_ws/stream/gap"
SUBSCRIBED_TAG = "salt_ws/stream/subscribed"
CHROMIUM = os.environ.get("SALT_WS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def streams(salt_factories, users_file):
    engine = {
        "disable_ssl": True,
        "history_size": HISTORY,
        "ping_interval": PING,
        "ping_timeout": PING,
        "tick_interval": 120,  # no tick within a test (a new client's first one was at once)
    }
    factory, port = start_master(salt_factories, users_file, engine)
    with factory.started(start_timeout=120):
        wait_listening(port)
        master = EngineMaster(factory, port)
        minion = factory.salt_minion_daemon("minion-1")
        with minion.started(start_timeout=120):
            master.minion = minion
            yield master


def seq(ident: str) -> int:
    return int(ident.rpartition(":")[2])


def epoch(ident: str) -> str:
    return ident.partition(":")[0]


def ws(master: EngineMaster, query: str = "", user: str = "saltdev", via: int = 0) -> Collector:
    """A collecting /all_events client (``via``: a proxy's port instead of the engine's)."""
    port = via or master.port
    token = master.login(user)["token"]
    return Collector(f"ws://127.0.0.1:{port}/all_events/{token}{query}")


def ready(client: Collector, master: EngineMaster, run: str) -> None:
    """Wait until ``client`` streams: a probe event reaches it (it must let probes pass)."""
    tag = f"sws/probe/{run}/{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        master.fire([(tag, {})])
        try:
            client.wait_for(lambda m: m.get("tag") == tag, timeout=1)
            return
        except AssertionError:
            continue
    raise AssertionError("the client never received a probe")


def of(client: Collector, prefix: str) -> list[dict[str, Any]]:
    """The client's messages whose tag starts with ``prefix``, in arrival order."""
    return client.tagged(prefix)


def names(messages: list[dict[str, Any]]) -> list[str]:
    return [m["tag"].rpartition("/")[2] for m in messages]


# -- tag filters --------------------------------------------------------------------------------


def test_a_filtered_client_gets_exactly_the_matching_events(streams):
    run = uuid.uuid4().hex
    base = f"sws/filt/{run}"
    one = ws(streams, f"?tag={base}/a/*&tag={base}/c")
    two = ws(streams, f"?tag=sws/*/{run}/b*&envelope=1")  # `*` crosses `/`
    admin = ws(streams, "?envelope=1")
    try:
        ready(admin, streams, run)
        time.sleep(0.5)  # one and two started with admin (same login, same handshake)
        streams.fire(
            [
                (f"{base}/a/1", {"n": 1}),
                (f"{base}/b/x/2", {"n": 2}),
                (f"{base}/c", {"n": 3}),
                (f"{base}/cc", {"n": 4}),  # no glob: an exact tag
                (f"{base}/a", {"n": 5}),  # "a/*" needs the slash
                (f"{base}/d/a/6", {"n": 6}),
            ]
        )
        # ... and one from the minion, through its own event.send
        ret = streams.minion.salt_call_cli(timeout=60).run("event.send", f"{base}/a/minion")
        assert ret.returncode == 0, ret
        wait_until(lambda: len(of(admin, base)) == 7, 30, "the admin's seven events")
        wait_until(lambda: len(of(one, base)) == 3, 10, "client one's three events")
        time.sleep(1)  # anything not matching would have arrived by now
        assert names(of(admin, base)) == ["1", "2", "c", "cc", "a", "6", "minion"]
        # exactly the matching events and nothing else: no presence, no other run, no probe
        assert [m["tag"] for m in one.messages] == [f"{base}/a/1", f"{base}/c", f"{base}/a/minion"]
        assert [m["tag"] for m in two.messages] == [f"{base}/b/x/2"]
        assert set(one.messages[0]) == {"tag", "data"}  # plain saltnado messages
        # the envelope client's ids are the ones everybody's stream carries
        by_tag = {m["tag"]: m["id"] for m in of(admin, base)}
        assert two.messages[0]["id"] == by_tag[f"{base}/b/x/2"]
        assert one.close_code is None and two.close_code is None
    finally:
        for client in (one, two, admin):
            client.close()


def test_subscribe_and_unsubscribe_while_connected(streams):
    run = uuid.uuid4().hex
    base = f"sws/sub/{run}"
    client = ws(streams, f"?tag={base}/a&tag=sws/probe/{run}/*")

    def change(message: dict[str, Any], tags: list[str]) -> None:
        before = len(client.tagged(SUBSCRIBED_TAG))
        client.ws.send(json.dumps(message))
        wait_until(lambda: len(client.tagged(SUBSCRIBED_TAG)) > before, 10, "subscribed")
        answer = client.tagged(SUBSCRIBED_TAG)[-1]
        assert answer["data"] == {"tags": sorted(tags)}

    def stage(tags: list[str], expect: list[str]) -> None:
        fired = [(f"{base}/{t}", {"t": t}) for t in tags]
        before = len(of(client, base))
        streams.fire([*fired, (f"{base}/end", {})])  # "end" shows the stage is over
        wait_until(lambda: any(m["tag"] == f"{base}/end" for m in client.messages), 10, "end")
        time.sleep(0.3)
        assert names(of(client, base)[before:]) == expect

    try:
        ready(client, streams, run)
        change({"subscribe": [f"{base}/end"]}, [f"{base}/a", f"{base}/end", f"sws/probe/{run}/*"])
        stage(["a", "b", "c"], ["a", "end"])
        change(
            {"subscribe": [f"{base}/b", f"{base}/a"]},  # "a" again: kept once
            [f"{base}/a", f"{base}/b", f"{base}/end", f"sws/probe/{run}/*"],
        )
        stage(["a", "b", "c"], ["a", "b", "end"])
        change(
            {"unsubscribe": [f"{base}/a", f"{base}/zzz"]},
            [f"{base}/b", f"{base}/end", f"sws/probe/{run}/*"],
        )
        stage(["a", "b", "c"], ["b", "end"])
        change(
            {"unsubscribe": [f"{base}/b", f"{base}/end", f"sws/probe/{run}/*"]}, []
        )  # no filter left: every event
        stage(["a", "b", "c"], ["a", "b", "c", "end"])
        assert client.close_code is None
    finally:
        client.close()


# -- resume -------------------------------------------------------------------------------------


def test_reconnect_with_since_gets_exactly_the_missed_events_then_live_ones(streams):
    run = uuid.uuid4().hex
    base = f"sws/resume/{run}"
    query = f"?envelope=1&tag={base}/*&tag=sws/probe/{run}/*"
    first = ws(streams, query)
    try:
        ready(first, streams, run)
        streams.fire([(f"{base}/before/{n}", {"n": n}) for n in range(3)])
        wait_until(lambda: len(of(first, base)) == 3, 10, "the first three")
    finally:
        first.close()
    last = first.messages[-1]["id"]
    count = 25
    streams.fire([(f"{base}/missed/{n}", {"n": n}) for n in range(count)])
    time.sleep(0.5)  # all of them numbered before the reconnect
    second = ws(streams, f"{query}&since={last}")
    try:
        wait_until(lambda: len(of(second, base)) >= count, 10, "the replay")
        streams.fire([(f"{base}/live/{n}", {"n": n}) for n in range(3)])
        wait_until(lambda: len(of(second, base)) >= count + 3, 10, "the live events")
        time.sleep(0.5)
        got = of(second, base)
        tags = [m["tag"] for m in got]
        assert tags == [f"{base}/missed/{n}" for n in range(count)] + [
            f"{base}/live/{n}" for n in range(3)
        ]
        assert second.messages[0]["tag"] == f"{base}/missed/0"  # no gap notice, nothing before
        ids = [seq(m["id"]) for m in got]
        assert ids == sorted(set(ids)) and ids[0] > seq(last)  # in order, no duplicate
        assert {epoch(m["id"]) for m in got} == {epoch(last)}
        assert [m["data"]["n"] for m in got[:count]] == list(range(count))
    finally:
        second.close()


def _sse_events(master: EngineMaster, token: str, path: str, headers: dict[str, str], want: int):
    """Read ``want`` events (id, tag, data) from ``GET path`` as Server-Sent Events."""
    conn = http.client.HTTPConnection("127.0.0.1", master.port, timeout=20)
    try:
        conn.request("GET", path, headers={"X-Auth-Token": token, **headers})
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        assert resp.getheader("Content-Type").startswith("text/event-stream")
        assert resp.readline() == b"retry: 400\n"
        events, fields = [], {}
        while len(events) < want:
            line = resp.readline().decode()
            if line == "\n":
                if "data" in fields:
                    events.append((fields.get("id"), fields.get("tag"), json.loads(fields["data"])))
                fields = {}
            elif not line.startswith(":") and line:
                name, _, value = line.rstrip("\n").partition(": ")
                fields[name] = value
        return events
    finally:
        conn.close()


def test_sse_resumes_after_last_event_id(streams):
    run = uuid.uuid4().hex
    base = f"sws/sse-resume/{run}"
    watcher = ws(streams, f"?envelope=1&tag={base}/*&tag=sws/probe/{run}/*")
    try:
        ready(watcher, streams, run)
        streams.fire([(f"{base}/{n}", {"n": n}) for n in range(6)])
        wait_until(lambda: len(of(watcher, base)) == 6, 10, "six events")
    finally:
        watcher.close()
    ids = [m["id"] for m in of(watcher, base)]
    token = streams.login()["token"]
    got = _sse_events(streams, token, f"/events?tag={base}/*", {"Last-Event-ID": ids[1]}, 4)
    assert [(i, t) for i, t, _ in got] == [(ids[n], f"{base}/{n}") for n in range(2, 6)]
    assert got[0][2] == {"tag": f"{base}/2", "data": of(watcher, base)[2]["data"]}


def test_since_older_than_the_buffer_gets_the_gap_notice(streams):
    run = uuid.uuid4().hex
    base = f"sws/gap/{run}"
    query = f"?envelope=1&tag={base}/*&tag=sws/probe/{run}/*"
    watcher = ws(streams, query)  # stays connected: sees every id
    try:
        ready(watcher, streams, run)
        streams.fire([(f"{base}/mark", {})])
        wait_until(lambda: of(watcher, base), 10, "the mark")
        since = of(watcher, base)[0]["id"]
        count = HISTORY + 50
        streams.fire([(f"{base}/{n}", {"n": n}) for n in range(count)])
        wait_until(lambda: len(of(watcher, base)) == count + 1, 30, "the burst")
        seen = {m["tag"]: m["id"] for m in of(watcher, base)}
        before = streams.run("ws.status").data["stream"]
        back = ws(streams, f"{query}&since={since}")
        try:
            wait_until(lambda: back.tagged(f"{base}/{count - 1}"), 10, "the replay's end")
            after = streams.run("ws.status").data["stream"]
        finally:
            back.close()
    finally:
        watcher.close()
    gap, *replayed = back.messages
    assert gap["tag"] == GAP_TAG
    assert gap["data"]["since"] == since
    assert gap["data"]["reason"] == "too old"
    assert gap["data"]["missed"] is True
    assert gap["data"]["resumed_from"] == replayed[0]["id"]  # the first event sent
    assert seq(gap["id"]) == seq(replayed[0]["id"]) - 1
    # the replay is the newest part of the burst, with the ids everybody saw, in order
    first = replayed[0]["data"]["n"]
    assert [m["tag"] for m in replayed] == [f"{base}/{n}" for n in range(first, count)]
    assert [m["id"] for m in replayed] == [seen[m["tag"]] for m in replayed]
    # ... and it is what the buffer (history_size entries) still held: from its oldest
    assert before["history"] == HISTORY and after["history"] == HISTORY
    assert 0 <= seq(replayed[0]["id"]) - seq(before["oldest"]) < 20  # (bus noise may evict)
    assert count - first > HISTORY - 20
    assert after["gaps"] == before["gaps"] + 1


def test_a_limited_users_filter_cannot_widen_what_they_see(streams):
    run = uuid.uuid4().hex
    admin = ws(streams, "?envelope=1")
    wide = ws(streams, "?tag=*&envelope=1", user="limited")
    later = ws(streams, "?tag=salt/job/*/new", user="limited")
    salt = streams.factory.salt_cli(timeout=60)
    try:
        ready(admin, streams, run)
        mark = admin.tagged(f"sws/probe/{run}/")[0]["id"]
        time.sleep(0.5)
        later.ws.send(json.dumps({"subscribe": ["*", "salt/*", "sws/*"]}))
        later.wait_for(lambda m: m["tag"] == SUBSCRIBED_TAG)
        streams.fire([(f"sws/lim/{run}", {"secret": run})])
        assert salt.run("test.ping", minion_tgt="minion-1").returncode == 0
        assert salt.run("cmd.run", f"echo {run}", minion_tgt="minion-1").returncode == 0

        def rets(client: Collector, fun: str) -> set[str]:
            return {
                m["data"]["id"]
                for m in client.tagged("salt/job/")
                if "/ret/" in m["tag"] and m["data"].get("fun") == fun
            }

        wait_until(lambda: rets(admin, "cmd.run") == {"minion-1"}, 30, "the admin's cmd.run")
        wait_until(lambda: rets(admin, "test.ping") == {"minion-1"}, 30, "the admin's test.ping")
        assert admin.tagged(f"sws/lim/{run}")
        replay = ws(streams, f"?tag=*&since={mark}", user="limited")  # the history, too
        try:
            wait_until(lambda: rets(replay, "test.ping"), 10, "the replayed test.ping")
            wait_until(lambda: rets(wide, "test.ping") and rets(later, "test.ping"), 10, "ping")
            time.sleep(1)  # anything the limited user should not get would have arrived by now
            for client in (wide, later, replay):
                text = json.dumps(client.messages)
                assert run not in text  # neither the custom event nor cmd.run's argument
                assert rets(client, "cmd.run") == set()
                assert rets(client, "test.ping") == {"minion-1"}
                shown = [
                    m["tag"] for m in client.messages if not m["tag"].startswith("salt_ws/stream/")
                ]
                assert shown and all(t.startswith("salt/job/") for t in shown), shown
                news = [m for m in client.tagged("salt/job/") if m["tag"].endswith("/new")]
                assert [m["data"]["fun"] for m in news] == ["test.ping"]
        finally:
            replay.close()
    finally:
        for client in (admin, wide, later):
            client.close()


# -- heartbeats ---------------------------------------------------------------------------------


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of the engine, on a thread of its own.

    Args:
        target: the engine's port.
        idle: close a connection (both sides) after this many seconds without a
            byte either way, as a load balancer's idle timeout does (None: never).
        page: HTML served for ``GET /page.html`` (the first request of a
            connection is read, and recorded in :attr:`requests`).
    """

    def __init__(self, target: int, idle: float | None = None, page: bytes | None = None) -> None:
        self.target = target
        self.idle = idle
        self.page = page
        self.requests: list[tuple[str, dict[str, str]]] = []  # (path, headers) forwarded
        self.idle_closed = 0
        self._open: list[tuple[str, asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._gate: asyncio.Event | None = None

    def __enter__(self) -> Proxy:
        self._thread.start()
        self._server = self._call(self._start())
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: Any) -> None:
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _start(self) -> asyncio.Server:
        self._gate = asyncio.Event()
        self._gate.set()
        return await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def _stop(self) -> None:
        self._server.close()
        for _, client, upstream in self._open:
            client.close()
            upstream.close()

    def hold(self, path: str) -> None:
        """Hold new connections whose first request is for ``path``... until :meth:`release`."""
        self._held = path
        self._loop.call_soon_threadsafe(self._gate.clear)

    def release(self) -> None:
        self._loop.call_soon_threadsafe(self._gate.set)

    def drop(self, path: str) -> int:
        """Close (both sides) every connection whose first request was for ``path``..."""

        async def drop() -> int:
            found = [(c, u) for p, c, u in self._open if p.startswith(path)]
            for client, upstream in found:
                client.close()
                upstream.close()
            return len(found)

        return self._call(drop())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, path = b"", ""
        try:
            if self.page is not None:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *rest = head.decode("latin-1").split("\r\n")
                path = line.split(" ")[1]
                headers = dict(h.split(": ", 1) for h in rest if ": " in h)
                if not path.startswith("/events"):  # one request per connection, so that
                    # each /events stream has a connection of its own (to drop)
                    kept = [h for h in rest if h and not h.lower().startswith("connection:")]
                    head = "\r\n".join([line, *kept, "Connection: close", "", ""]).encode("latin-1")
                if path == "/page.html":
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                        b"Cache-Control: no-store\r\nConnection: close\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(self.page), self.page)
                    )
                    await writer.drain()
                    writer.close()
                    return
                self.requests.append((path, headers))
                if path.startswith(getattr(self, "_held", "\0")):
                    await self._gate.wait()
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        entry = (path, writer, up_writer)
        self._open.append(entry)
        up_writer.write(head)
        last = [self._loop.time()]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    last[0] = self._loop.time()
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        tasks = [
            asyncio.ensure_future(pipe(reader, up_writer)),
            asyncio.ensure_future(pipe(up_reader, writer)),
        ]
        try:
            while not all(t.done() for t in tasks):
                await asyncio.wait(tasks, timeout=0.1)
                if self.idle is not None and self._loop.time() - last[0] > self.idle:
                    self.idle_closed += 1
                    writer.close()
                    up_writer.close()
                    break
            await asyncio.wait(tasks, timeout=2)
        finally:
            self._open.remove(entry)


def test_pings_keep_an_idle_connection_open_through_an_idle_timeout(streams):
    run = uuid.uuid4().hex
    tag = f"sws/idle/{run}"
    with Proxy(streams.port, idle=IDLE) as proxy:
        # the proxy does cut a silent connection
        silent = socket.create_connection(("127.0.0.1", proxy.port), timeout=IDLE * 3)
        started = time.monotonic()
        try:
            assert silent.recv(1) == b""
            assert IDLE <= time.monotonic() - started < IDLE + 2
        finally:
            silent.close()
        assert proxy.idle_closed == 1
        # a filtered plain client hears no event and no tick: only pings cross the proxy
        client = ws(streams, f"?tag={tag}", via=proxy.port)
        try:
            time.sleep(IDLE * 2)
            assert client.close_code is None and client._thread.is_alive()
            assert client.messages == []
            streams.fire([(tag, {"still": "here"})])
            assert client.wait_for(lambda m: m["tag"] == tag, 10)["data"]["still"] == "here"
            assert proxy.idle_closed == 1
        finally:
            client.close()


def _handshake_only(master: EngineMaster, token: str, query: str) -> socket.socket:
    """A websocket that upgrades and says it is ready, then never reads or answers a ping."""
    sock = socket.create_connection(("127.0.0.1", master.port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /all_events/{token}{query} HTTP/1.1\r\nHost: 127.0.0.1:{master.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # byte by byte: nothing after the headers is read
    assert head.startswith(b"HTTP/1.1 101"), head
    sock.sendall(websocket.ABNF.create_frame(b"websocket client ready", 0x1).format())
    return sock


def _opcodes(data: bytes) -> list[int]:
    """The opcodes of the (unmasked, server-sent) websocket frames in ``data``."""
    found, at = [], 0
    while at + 2 <= len(data):
        opcode, size, at = data[at] & 0x0F, data[at + 1] & 0x7F, at + 2
        if size == 126:
            size, at = int.from_bytes(data[at : at + 2], "big"), at + 2
        elif size == 127:
            size, at = int.from_bytes(data[at : at + 8], "big"), at + 8
        found.append(opcode)
        at += size
    return found


def test_a_peer_that_stops_answering_pings_is_dropped(streams):
    def clients() -> int:
        return streams.run("ws.status").data["clients"]["all_events"]

    base = clients()
    sock = _handshake_only(streams, streams.login()["token"], f"?tag=sws/none/{uuid.uuid4().hex}")
    try:
        wait_until(lambda: clients() == base + 1, 20, "the silent client to be counted")
        started = time.monotonic()
        # no pong within ping_timeout: closed (tornado then waits up to 5 s for the
        # close handshake the peer never answers, and drops the socket)
        wait_until(lambda: clients() == base, PING * 2 + 15, "the silent client to be dropped")
        assert time.monotonic() - started < PING * 2 + 15
        sock.settimeout(10)
        data = b""
        while chunk := sock.recv(65536):  # the server closed the connection: EOF
            data += chunk
        # pings (opcode 9) it never answered, then the close (8); nothing else (its filter)
        opcodes = _opcodes(data)
        assert opcodes[-1] == 8 and set(opcodes[:-1]) == {9}, opcodes
    finally:
        sock.close()


# -- SSE in a browser ---------------------------------------------------------------------------

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>sse</title></head><body><script>
window.got = []; window.opens = 0; window.errors = 0;
window.start = async function (user, password, url) {
  const r = await fetch('/login', {method: 'POST', headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({username: user, password: password, eauth: 'file'})});
  if (r.status !== 200) { return 'login ' + r.status; }
  const source = new EventSource(url);
  source.onopen = function () { window.opens += 1; };
  source.onerror = function () { window.errors += 1; };
  source.onmessage = function (e) {
    window.got.push({id: e.lastEventId, data: JSON.parse(e.data)});
  };
  window.source = source;
  return 'ok';
};
</script></body></html>
"""


def _chromium_or_skip() -> Any:
    """Playwright's sync API, or a skip (a failure under CI) when Chromium is missing."""
    ci = bool(os.environ.get("CI"))
    if not os.path.exists(CHROMIUM):
        if ci:
            pytest.fail(f"no Chromium at {CHROMIUM} under CI (.ci/run installs it)")
        pytest.skip(f"no Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if ci:
            raise
        pytest.skip("playwright is not installed")
    return sync_playwright


@pytest.mark.parametrize("since", [False, True], ids=["plain", "opened-with-since"])
def test_eventsource_in_chromium_reconnects_and_resumes_by_last_event_id(streams, since):
    """EventSource keeps its URL when it reconnects: a page opened with ``?since=`` sends
    that and ``Last-Event-ID`` (newer); the header must win, or the replay repeats."""
    sync_playwright = _chromium_or_skip()
    run = uuid.uuid4().hex
    base = f"sws/browser/{run}"
    query = f"?tag={base}/*"
    expect = ["before", "missed", "live"]
    if since:  # the page resumes from an id it kept (e.g. across a reload)
        watcher = ws(streams, f"?envelope=1&tag={base}/*&tag=sws/probe/{run}/*")
        try:
            ready(watcher, streams, run)
            streams.fire([(f"{base}/early/0", {"n": -1}), (f"{base}/early/1", {"n": 0})])
            wait_until(lambda: len(of(watcher, base)) == 2, 10, "the early events")
        finally:
            watcher.close()
        query += f"&since={of(watcher, base)[0]['id']}"
        expect.insert(0, "early/1")
    with (
        Proxy(streams.port, page=PAGE) as proxy,
        tempfile.TemporaryDirectory(prefix="sws-chromium-") as profile,
        sync_playwright() as playwright,
    ):
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = context.new_page()
            page.goto(f"http://127.0.0.1:{proxy.port}/page.html")
            user = "saltdev"
            started = page.evaluate("(a) => start(...a)", [user, USERS[user], "/events" + query])
            assert started == "ok"
            got: Callable[[], list[dict[str, Any]]] = lambda: page.evaluate("window.got")  # noqa: E731
            wait_until(lambda: page.evaluate("window.opens") == 1, 20, "the stream to open")
            streams.fire([(f"{base}/before", {"n": 1})])
            wait_until(lambda: len(got()) == len(expect) - 2, 20, "the first events")
            # the connection drops; EventSource reconnects (held at the proxy meanwhile)
            proxy.hold("/events")
            assert proxy.drop("/events") == 1
            wait_until(lambda: len([p for p, _ in proxy.requests if p.startswith("/events")]) == 2,
                       20, "EventSource to reconnect")  # fmt: skip
            streams.fire([(f"{base}/missed", {"n": 2})])
            time.sleep(0.5)
            proxy.release()
            wait_until(lambda: page.evaluate("window.opens") == 2, 20, "the second open")
            streams.fire([(f"{base}/live", {"n": 3})])
            wait_until(lambda: got() and got()[-1]["data"]["tag"] == f"{base}/live", 20, "live")
            time.sleep(0.5)
            events = got()
            # each exactly once, in order: no hole, no duplicate
            assert [e["data"]["tag"] for e in events] == [f"{base}/{name}" for name in expect]
            ids = [seq(e["id"]) for e in events]
            assert ids == sorted(set(ids))
            first, second = [h for p, h in proxy.requests if p.startswith("/events")]
            headers = {k.lower(): v for k, v in second.items()}
            before = next(e for e in events if e["data"]["tag"] == f"{base}/before")
            assert headers["last-event-id"] == before["id"]  # sent by EventSource itself
            for request in (first, second):
                lowered = {k.lower(): v for k, v in request.items()}
                assert "session_id=" in lowered["cookie"]  # cookie auth, no header token
                assert "x-auth-token" not in lowered
            assert page.evaluate("window.errors") >= 1  # it saw the drop
        finally:
            context.close()


# -- restart (last: it restarts the shared master) ---------------------------------------------


def test_an_engine_restart_is_seen_as_engine_restarted(streams):
    run = uuid.uuid4().hex
    base = f"sws/restart/{run}"
    query = f"?envelope=1&tag={base}/*&tag=sws/probe/{run}/*"
    client = ws(streams, query)
    try:
        ready(client, streams, run)
        streams.fire([(f"{base}/before", {})])
        wait_until(lambda: of(client, base), 10, "the event before the restart")
    finally:
        client.close()
    since = of(client, base)[0]["id"]
    streams.factory.terminate()
    streams.factory.start(start_timeout=120)
    wait_listening(streams.port)
    probe = ws(streams, f"?tag=sws/probe/{run}/*&tag={base}/*")
    try:
        ready(probe, streams, run)  # the new engine reads the bus
        streams.fire([(f"{base}/after", {})])
        wait_until(lambda: of(probe, base), 10, "the event after the restart")
    finally:
        probe.close()
    back = ws(streams, f"?envelope=1&tag={base}/*&since={since}")
    try:
        wait_until(lambda: of(back, base), 10, "the event after the restart")
        gap, first = back.messages[:2]
        assert gap["tag"] == GAP_TAG
        assert gap["data"]["reason"] == "engine restarted"
        assert gap["data"]["since"] == since
        assert gap["data"]["missed"] is True
        assert first["tag"] == f"{base}/after"
        assert gap["data"]["resumed_from"] == first["id"]
        assert epoch(first["id"]) != epoch(since)
        assert streams.run("ws.status").data["stream"]["epoch"] == epoch(first["id"])
    finally:
        back.close()

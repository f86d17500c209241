"""salt_ws.app over a real loopback socket: /login, /logout and the event websockets.

Real app, hub and handlers; eauth is a recording fake (see harness.FakeAuthenticator).
Responses are checked for their payloads, not only their status codes.
"""

from __future__ import annotations

import asyncio
import http.cookies
import json
import logging

import pytest
import tornado.httpclient
import tornado.websocket
import yaml

from salt_ws import wire
from salt_ws.handlers import CLIENT_READY
from salt_ws.hub import Channel

from .harness import ALICE, GOOD_TOKEN, UNKNOWN_TOKEN, login_payload, serving


async def nothing_arrives(conn: tornado.websocket.WebSocketClientConnection, wait=0.2):
    """(no message arrived within ``wait`` seconds, the still-pending read)."""
    pending = asyncio.ensure_future(conn.read_message())
    done, _ = await asyncio.wait([pending], timeout=wait)
    return not done, pending


def events(count: int, prefix: str = "salt/job") -> list[str]:
    return [wire.encode_event(f"{prefix}/{n}/new", {"jid": str(n), "n": n}) for n in range(count)]


def session_cookie(response: tornado.httpclient.HTTPResponse) -> http.cookies.Morsel:
    jar = http.cookies.SimpleCookie()
    for header in response.headers.get_list("Set-Cookie"):
        jar.load(header)
    return jar["session_id"]


# -- POST /login -------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["json", "form", "json-lowstate-list"])
async def test_login_returns_the_token_payload_cookie_and_header(encoding):
    async with serving() as site:
        if encoding == "form":
            response = await site.post_form("/login", ALICE)
        elif encoding == "json":
            response = await site.post_json("/login", ALICE)
        else:
            response = await site.post_json("/login", [ALICE])

        assert response.code == 200
        assert response.headers["Content-Type"] == "application/json"
        assert json.loads(response.body) == {"return": [login_payload()]}
        assert response.headers["X-Auth-Token"] == GOOD_TOKEN
        cookie = session_cookie(response)
        assert cookie.value == GOOD_TOKEN
        assert cookie["httponly"] is True
        assert cookie["samesite"] == "Strict"
        assert not cookie["secure"]  # plain HTTP in this test
        assert site.auth.called("login") == [("alice", "secret", "pam")]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"password": "secret", "eauth": "pam"}, "username"),
        ({"username": "alice", "eauth": "pam"}, "password"),
        ({"username": "alice", "password": "secret"}, "eauth"),
        ({"username": "", "password": "secret", "eauth": "pam"}, "username"),
        ({"username": "alice", "password": "secret", "eauth": 5}, "eauth"),
        ({"username": ["alice"], "password": "secret", "eauth": "pam"}, "username"),
    ],
    ids=["no-username", "no-password", "no-eauth", "empty-username", "int-eauth", "list-user"],
)
async def test_login_names_the_missing_field(body, field):
    async with serving() as site:
        response = await site.post_json("/login", body)
        assert response.code == 400
        assert json.loads(response.body) == {
            "status": "400 Bad Request",
            "return": f"missing or empty field '{field}'",
        }
        assert site.auth.called("login") == []


async def test_login_form_without_a_field_names_it():
    async with serving() as site:
        response = await site.post_form("/login", {"username": "alice", "password": "secret"})
        assert response.code == 400
        assert "'eauth'" in json.loads(response.body)["return"]


@pytest.mark.parametrize(
    ("content_type", "body", "says"),
    [
        ("application/json", "{not json", "not valid JSON"),
        ("application/json", b"\xff\xfe", "not valid JSON"),
        ("application/json", json.dumps([ALICE, ALICE]), "must be an object"),
        ("application/json", '"alice"', "must be an object"),
        ("text/plain", "username=alice", "unsupported Content-Type"),
    ],
    ids=["broken", "not-utf8", "two-item-list", "string", "text-plain"],
)
async def test_login_with_an_unreadable_body_is_400(content_type, body, says):
    async with serving() as site:
        response = await site.fetch("/login", "POST", body, {"Content-Type": content_type})
        assert response.code == 400
        reply = json.loads(response.body)
        assert reply["status"] == "400 Bad Request"
        assert says in reply["return"]


async def test_refused_credentials_are_401_with_a_json_body():
    async with serving() as site:
        response = await site.post_json("/login", {**ALICE, "password": "wrong"})
        assert response.code == 401
        assert response.headers["Content-Type"] == "application/json"
        assert json.loads(response.body) == {
            "status": "401 Unauthorized",
            "return": "could not authenticate using the provided credentials",
        }
        assert "Set-Cookie" not in response.headers
        assert "X-Auth-Token" not in response.headers


async def test_get_login_asks_to_log_in():
    async with serving() as site:
        response = await site.fetch("/login")
        assert response.code == 401
        assert response.headers["WWW-Authenticate"] == "Session"
        assert json.loads(response.body) == {
            "status": "401 Unauthorized",
            "return": "Please log in",
        }


@pytest.mark.parametrize("accept", ["application/x-yaml", "text/yaml", "application/yaml"])
async def test_login_answers_yaml_on_request(accept):
    async with serving() as site:
        response = await site.post_json("/login", ALICE, {"Accept": accept})
        assert response.code == 200
        assert response.headers["Content-Type"] == "application/x-yaml"
        assert yaml.safe_load(response.body) == {"return": [login_payload()]}


async def test_json_wins_when_both_are_acceptable():
    async with serving() as site:
        accept = "application/x-yaml, application/json"
        response = await site.post_json("/login", ALICE, {"Accept": accept})
        assert response.headers["Content-Type"] == "application/json"


async def test_responses_are_not_cached():
    async with serving() as site:
        response = await site.post_json("/login", ALICE)
        assert response.headers["Cache-Control"] == "no-store"


async def test_an_unsupported_method_answers_in_the_error_shape():
    async with serving() as site:
        response = await site.fetch("/login", "DELETE")
        assert response.code == 405
        assert json.loads(response.body)["status"] == "405 Method Not Allowed"


# -- CORS on the HTTP endpoints ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("cors_origin", "origin", "allowed", "code"),
    [
        (None, "http://ui.example", None, 403),  # a cross-origin POST is refused (issue 9)
        ("*", "http://ui.example", "*", 200),
        ("http://ui.example", "http://ui.example", "http://ui.example", 200),
        ("http://ui.example", "http://evil.example", None, 403),
        (["http://a.example", "http://ui.example"], "http://ui.example", "http://ui.example", 200),
        (["http://a.example"], "http://evil.example", None, 403),
    ],
    ids=["off", "star", "one-match", "one-other", "list-match", "list-other"],
)
async def test_login_cors_headers(cors_origin, origin, allowed, code):
    async with serving(cors_origin=cors_origin) as site:
        response = await site.post_json("/login", ALICE, {"Origin": origin})
        assert response.code == code
        assert response.headers.get("Access-Control-Allow-Origin") == allowed


async def test_cors_preflight():
    async with serving(cors_origin="*") as site:
        headers = {
            "Origin": "http://ui.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "X-Auth-Token, Content-Type",
        }
        response = await site.fetch("/login", "OPTIONS", headers=headers)
        assert response.code == 204
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert response.headers["Access-Control-Allow-Headers"] == "X-Auth-Token, Content-Type"
        assert response.headers["Access-Control-Expose-Headers"] == "X-Auth-Token"
        assert "POST" in response.headers["Access-Control-Allow-Methods"]


# -- POST /logout ------------------------------------------------------------------------------


@pytest.mark.parametrize("carrier", ["header", "cookie", "json-body", "form-body"])
async def test_logout_clears_the_token(carrier):
    async with serving() as site:
        if carrier == "header":
            response = await site.fetch("/logout", "POST", "", {"X-Auth-Token": GOOD_TOKEN})
        elif carrier == "cookie":
            headers = {"Cookie": f"session_id={GOOD_TOKEN}"}
            response = await site.fetch("/logout", "POST", "", headers)
        elif carrier == "json-body":
            response = await site.post_json("/logout", {"token": GOOD_TOKEN})
        else:
            response = await site.post_form("/logout", {"token": GOOD_TOKEN})

        assert response.code == 200
        assert json.loads(response.body) == {"return": "Your token has been cleared"}
        assert site.auth.called("logout") == [(GOOD_TOKEN,)]
        cleared = session_cookie(response)
        assert cleared.value == ""


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ("", {}),
        ("{}", {"Content-Type": "application/json"}),
        ("{oops", {"Content-Type": "application/json"}),
    ],
    ids=["nothing", "empty-json", "broken-json"],
)
async def test_logout_without_a_token_is_401(body, headers):
    async with serving() as site:
        response = await site.fetch("/logout", "POST", body, headers)
        assert response.code == 401
        assert json.loads(response.body) == {
            "status": "401 Unauthorized",
            "return": "no valid token given",
        }
        assert site.auth.called("logout") == []


async def test_logout_with_a_malformed_token_is_401():
    async with serving() as site:
        response = await site.fetch("/logout", "POST", "", {"X-Auth-Token": "nope"})
        assert response.code == 401
        assert site.auth.called("logout") == [("nope",)]


# -- /all_events: the token is checked before the upgrade --------------------------------------


@pytest.mark.parametrize(
    "token",
    ["abc", UNKNOWN_TOKEN, GOOD_TOKEN[:-1], "%00" + GOOD_TOKEN],
    ids=["malformed", "unknown", "63-digits", "percent-encoded-junk"],
)
async def test_a_websocket_with_a_bad_token_is_refused_before_the_upgrade(token):
    async with serving() as site:
        with pytest.raises(tornado.httpclient.HTTPClientError) as err:
            await site.connect(token)
        assert err.value.code == 401
        assert site.services.counters.connections == 0
        assert site.services.sockets == set()


async def test_a_plain_get_with_a_bad_token_gets_a_json_401():
    async with serving() as site:
        response = await site.fetch(f"/all_events/{UNKNOWN_TOKEN}")
        assert response.code == 401
        assert json.loads(response.body) == {
            "status": "401 Unauthorized",
            "return": "invalid or expired token",
        }
        assert site.auth.called("session") == [(UNKNOWN_TOKEN,)]


async def test_a_plain_get_with_a_good_token_is_not_upgraded():
    async with serving() as site:
        response = await site.fetch(f"/all_events/{GOOD_TOKEN}")
        assert response.code == 400


async def test_without_a_token_the_upgrade_waits_for_a_token_message():
    async with serving() as site:
        conn = await site.connect("")
        assert site.auth.called("session") == []
        await conn.write_message(CLIENT_READY)  # not a token message
        assert await conn.read_message() is None
        assert conn.close_code == wire.CLOSE_TOKEN_INVALID
        assert "token" in conn.close_reason


# -- /all_events: the ready handshake and the stream -------------------------------------------


async def test_nothing_is_sent_before_the_client_says_ready():
    async with serving() as site:
        conn = await site.connect()
        assert site.services.counters.connections == 1
        site.publish(events(3, "early"))
        quiet, first = await nothing_arrives(conn)
        assert quiet
        assert site.hub.count(Channel.ALL_EVENTS) == 0

        await conn.write_message(CLIENT_READY)
        await site.subscribed(1)
        published = events(50)
        site.publish(published)
        received = [await first] + [await conn.read_message() for _ in range(49)]
        assert received == published  # nothing from before "ready", nothing lost, in order
        quiet, _ = await nothing_arrives(conn, 0.1)
        assert quiet


@pytest.mark.parametrize(
    ("chatter", "code"),
    [
        ("hello", wire.CLOSE_POLICY),
        ("websocket client ready\n", wire.CLOSE_POLICY),
        ("Websocket client ready", wire.CLOSE_POLICY),
        (b"websocket client ready", wire.CLOSE_UNSUPPORTED),
    ],
    ids=["other-text", "trailing-newline", "other-case", "binary"],
)
async def test_only_the_exact_ready_text_subscribes(chatter, code):
    async with serving() as site:
        conn = await site.connect()
        await conn.write_message(chatter, binary=isinstance(chatter, bytes))
        site.publish(events(1))
        assert await conn.read_message() is None  # closed, nothing delivered
        assert conn.close_code == code
        assert site.hub.count(Channel.ALL_EVENTS) == 0


async def test_many_publishes_arrive_in_order():
    async with serving() as site:
        conn = await site.ready()
        published = []
        for batch in range(20):
            messages = events(25, f"batch/{batch}")
            published += messages
            site.publish(messages)
            await asyncio.sleep(0)
        received = [await conn.read_message() for _ in published]
        assert received == published
        assert site.services.counters.messages_sent == len(published)


async def test_a_second_ready_does_not_duplicate_the_stream():
    async with serving() as site:
        conn = await site.ready()
        await conn.write_message(CLIENT_READY)
        await conn.write_message(CLIENT_READY)
        await asyncio.sleep(0.05)
        assert site.hub.count(Channel.ALL_EVENTS) == 1
        published = events(3)
        site.publish(published)
        assert [await conn.read_message() for _ in range(3)] == published
        site.publish(["last"])
        assert await conn.read_message() == "last"


async def test_every_ready_client_gets_every_message():
    async with serving() as site:
        clients = [await site.ready() for _ in range(3)]
        published = events(10)
        site.publish(published)
        for conn in clients:
            assert [await conn.read_message() for _ in range(10)] == published


async def test_a_closed_client_leaves_the_hub():
    async with serving() as site:
        conn = await site.ready()
        assert len(site.services.sockets) == 1
        conn.close()
        await site.subscribed(0)
        while site.services.sockets:
            await asyncio.sleep(0.005)
        site.publish(events(1))  # nobody to deliver to: harmless


# -- /formatted_events: same handshake, snapshot first -----------------------------------------


def snapshots(channel: Channel) -> list[str]:
    """A stand-in for the formatted view's snapshot (minions table, then jobs table)."""
    if channel is Channel.FORMATTED_EVENTS:
        return ['{"minions":{}}', '{"jobs":{}}']
    return []


@pytest.mark.parametrize("token", ["abc", UNKNOWN_TOKEN], ids=["malformed", "unknown"])
async def test_formatted_events_refuses_a_bad_token_before_the_upgrade(token):
    async with serving() as site:
        with pytest.raises(tornado.httpclient.HTTPClientError) as err:
            await site.connect(token, channel=Channel.FORMATTED_EVENTS)
        assert err.value.code == 401


async def test_formatted_events_sends_the_snapshot_after_ready_then_updates():
    async with serving(snapshot=snapshots) as site:
        conn = await site.connect(channel=Channel.FORMATTED_EVENTS)
        quiet, first = await nothing_arrives(conn, 0.1)
        assert quiet
        await conn.write_message(CLIENT_READY)
        await site.subscribed(1, Channel.FORMATTED_EVENTS)
        site.publish(['{"jobs":{"1":{}}}'], Channel.FORMATTED_EVENTS)
        site.publish(events(1))  # raw events are not on this channel
        assert [await first, await conn.read_message(), await conn.read_message()] == [
            '{"minions":{}}',
            '{"jobs":{}}',
            '{"jobs":{"1":{}}}',
        ]
        quiet, _ = await nothing_arrives(conn, 0.1)
        assert quiet


async def test_all_events_gets_no_snapshot():
    async with serving(snapshot=snapshots) as site:
        conn = await site.ready()
        published = events(2)
        site.publish(published)
        assert [await conn.read_message() for _ in published] == published


# -- /all_events: the slow-client policy -------------------------------------------------------


async def test_a_client_that_stops_reading_is_cut_with_4001_and_the_others_get_everything():
    limit = 10
    async with serving(queue_limit=limit) as site:
        slow = await site.ready()
        reader = await site.ready()
        pad = "x" * 65536  # the stalled client's socket buffers fill after some MiB
        published = []
        for n in range(2000):  # bounded: the cut comes long before this
            message = wire.encode_event(f"load/{n}", {"n": n, "pad": pad})
            site.publish([message])
            published.append(message)
            assert await reader.read_message() == message
            if site.hub.stats.clients_cut:
                break
        assert site.hub.stats.clients_cut == 1
        assert site.hub.count(Channel.ALL_EVENTS) == 1

        after = events(5, "after")
        site.publish(after)
        assert [await reader.read_message() for _ in after] == after

        # The stalled client now reads: an in-order prefix of the stream, then the close.
        received = []
        while (message := await slow.read_message()) is not None:
            received.append(message)
        assert received == published[: len(received)]
        assert len(received) < len(published)
        assert slow.close_code == wire.CLOSE_TOO_SLOW
        assert "too slow" in slow.close_reason
        assert str(limit) in slow.close_reason


# -- /all_events: origin checks ----------------------------------------------------------------

SAME_ORIGIN = "same-origin"  # replaced by http://127.0.0.1:<port>


@pytest.mark.parametrize(
    ("cors_origin", "origin", "accepted"),
    [
        (None, "http://evil.example", False),
        (None, SAME_ORIGIN, True),
        (None, None, True),  # non-browser clients send no Origin
        ("*", "http://evil.example", True),
        ("http://ui.example", "http://ui.example", True),
        ("http://ui.example", "http://evil.example", False),
        (["http://ui.example", "http://ops.example"], "http://ops.example", True),
        (["http://ui.example", "http://ops.example"], "http://evil.example", False),
    ],
    ids=[
        "default-cross-origin",
        "default-same-origin",
        "default-no-origin",
        "star",
        "one-listed",
        "one-other",
        "list-listed",
        "list-other",
    ],
)
async def test_websocket_origin_check(cors_origin, origin, accepted):
    async with serving(cors_origin=cors_origin) as site:
        if origin == SAME_ORIGIN:
            origin = f"http://127.0.0.1:{site.port}"
        headers = {"Origin": origin} if origin else {}
        if accepted:
            conn = await site.connect(GOOD_TOKEN, headers)
            await conn.write_message(CLIENT_READY)
            await site.subscribed(1)
        else:
            with pytest.raises(tornado.httpclient.HTTPClientError) as err:
                await site.connect(GOOD_TOKEN, headers)
            assert err.value.code == 403
            assert site.services.sockets == set()


# -- tokens stay out of the logs ---------------------------------------------------------------

LOGGERS = ("", "tornado.access", "tornado.general", "tornado.application", "salt_ws")


async def test_tokens_never_reach_the_logs(caplog):
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    async with serving() as site:
        with pytest.raises(tornado.httpclient.HTTPClientError):
            await site.connect(UNKNOWN_TOKEN)
        conn = await site.ready(GOOD_TOKEN)
        site.publish(events(1))
        await conn.read_message()
        conn.close()
        await site.subscribed(0)
        await site.fetch(f"/all_events/{UNKNOWN_TOKEN}?again=1")
        await site.post_json("/login", ALICE)
        await site.post_json("/login", {**ALICE, "password": "wrong"})
        await site.fetch("/logout", "POST", "", {"X-Auth-Token": GOOD_TOKEN})

    messages = [record.getMessage() for record in caplog.records]
    access = [r.getMessage() for r in caplog.records if r.name == "salt_ws.access"]
    assert any(f"/all_events/{UNKNOWN_TOKEN[:6]}..." in m for m in access)  # logged, redacted
    assert any(f"/all_events/{GOOD_TOKEN[:6]}..." in m for m in access)
    for token in (GOOD_TOKEN, UNKNOWN_TOKEN):
        assert not [m for m in messages if token in m or token.upper() in m]


@pytest.mark.parametrize("token", [123, ["5a1f" * 16], {"a": 1}], ids=["int", "list", "dict"])
async def test_logout_with_a_non_string_token_is_401(token):
    from salt_ws.auth import Authenticator
    from tests.unit.test_auth import FakeLoadAuth

    auth = Authenticator({"external_auth": {}}, load_auth=lambda opts: FakeLoadAuth())
    try:
        async with serving(auth=auth) as site:
            response = await site.post_json("/logout", {"token": token})
            assert response.code == 401
            assert json.loads(response.body)["return"] == "no valid token given"
    finally:
        auth.shutdown()


async def test_percent_encoded_tokens_are_redacted_too(caplog):
    for name in ("salt_ws", "tornado"):
        caplog.set_level(logging.DEBUG, logger=name)
    escaped = "".join(f"%{ord(c):02x}" if i % 20 == 0 else c for i, c in enumerate(GOOD_TOKEN))
    async with serving() as site:
        await site.connect(escaped)
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "GET /all_events/" in logged
    assert GOOD_TOKEN[1:20] not in logged

"""salt_ws.wire: what goes on the websocket.

Every frame is saltnado's ``{"tag": ..., "data": ...}``: compact, strict JSON, no trailing
newline. Event payloads come from msgpack and may hold values JSON cannot express; encoding
converts them and never raises.
"""

from __future__ import annotations

import datetime
import decimal
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from salt_ws import wire


def strict_loads(text: str) -> Any:
    """json.loads that refuses NaN/Infinity, as browsers' JSON.parse does."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


# -- the event frame ---------------------------------------------------------------------------


def test_event_frame_is_exactly_tag_and_data():
    text = wire.encode_event("salt/job/20240101/new", {"fun": "test.ping", "tgt": "*"})
    assert text == '{"tag":"salt/job/20240101/new","data":{"fun":"test.ping","tgt":"*"}}'


def test_event_frame_has_no_whitespace_padding_and_no_trailing_newline():
    text = wire.encode_event("t", {"a": [1, 2], "b": {"c": None}})
    assert not text.endswith("\n")
    assert " " not in text
    assert set(strict_loads(text)) == {"tag", "data"}


@pytest.mark.parametrize(
    "data",
    [{}, [], None, "text", 0, 1.5, True, {"nested": {"deep": [1, {"x": "y"}]}}],
    ids=repr,
)
def test_event_frame_carries_any_json_payload_unchanged(data):
    assert strict_loads(wire.encode_event("tag", data)) == {"tag": "tag", "data": data}


def test_non_ascii_text_survives():
    text = wire.encode_event("salt/minion/münchen/start", {"msg": "日本語 ✓"})
    assert strict_loads(text)["data"]["msg"] == "日本語 ✓"
    text.encode("utf-8")  # a websocket text frame must be valid UTF-8


# -- payloads JSON cannot express -----------------------------------------------------------


class Opaque:
    def __str__(self) -> str:
        return "<opaque thing>"


ODD_PAYLOADS = [
    pytest.param(b"plain bytes", "plain bytes", id="bytes-utf8"),
    pytest.param(b"caf\xc3\xa9", "café", id="bytes-utf8-multibyte"),
    pytest.param(b"\xff\xfe\x00A", "\\xff\\xfe\x00A", id="bytes-invalid-utf8"),
    pytest.param(bytearray(b"ba"), "ba", id="bytearray"),
    pytest.param(memoryview(b"mv"), "mv", id="memoryview"),
    pytest.param({3}, [3], id="set"),
    pytest.param(frozenset({"a"}), ["a"], id="frozenset"),
    pytest.param((1, "two", None), [1, "two", None], id="tuple"),
    pytest.param({1: "a", 2: "b"}, {"1": "a", "2": "b"}, id="int-keys"),
    pytest.param({(1, 2): "t"}, {"[1, 2]": "t"}, id="tuple-key"),
    pytest.param({b"key": 1}, {"key": 1}, id="bytes-key"),
    pytest.param({1.5: "f"}, {"1.5": "f"}, id="float-key"),
    pytest.param(float("nan"), "nan", id="nan"),
    pytest.param(float("inf"), "inf", id="inf"),
    pytest.param(float("-inf"), "-inf", id="-inf"),
    pytest.param([1.0, float("nan")], [1.0, "nan"], id="nan-in-list"),
    pytest.param({float("nan"): 1}, {"nan": 1}, id="nan-key"),
    pytest.param(
        {"ret": {"m1": [b"\xff", {7}, (float("inf"),)]}, "ok": True},
        {"ret": {"m1": ["\\xff", [7], ["inf"]]}, "ok": True},
        id="nested",
    ),
    pytest.param(
        datetime.datetime(2024, 1, 2, 3, 4, 5), "2024-01-02 03:04:05", id="datetime"
    ),  # salt.payload decodes msgpack ext type 78 to datetime
    pytest.param(decimal.Decimal("1.10"), "1.10", id="decimal"),
    pytest.param(Opaque(), "<opaque thing>", id="arbitrary-object"),
    pytest.param({"f": print}, {"f": str(print)}, id="builtin-function"),
]


@pytest.mark.parametrize(("data", "expected"), ODD_PAYLOADS)
def test_odd_payload_is_converted_to_strict_json(data, expected):
    text = wire.encode_event("salt/odd", data)
    assert strict_loads(text) == {"tag": "salt/odd", "data": expected}
    text.encode("utf-8")


@pytest.mark.parametrize(("data", "expected"), ODD_PAYLOADS)
def test_jsonable_converts_without_encoding(data, expected):
    assert wire.jsonable(data) == expected


def test_encode_does_not_modify_the_payload():
    data = {"b": b"\xff", "s": {1}, 2: (3,)}
    wire.encode_event("t", data)
    assert data == {"b": b"\xff", "s": {1}, 2: (3,)}


def test_encode_is_compact_strict_json_for_any_message():
    assert wire.encode({"return": [{"a": 1}]}) == '{"return":[{"a":1}]}'
    assert wire.encode({"x": float("nan")}) == '{"x":"nan"}'


# -- the engine's own notices ------------------------------------------------------------------


def test_notice_is_an_event_frame_with_a_stamp():
    text = wire.notice(wire.GAP_TAG, "2024-01-02T03:04:05.000000", reason="bus lost", missed=True)
    assert strict_loads(text) == {
        "tag": "salt_ws/bus/lost",
        "data": {"reason": "bus lost", "missed": True, "_stamp": "2024-01-02T03:04:05.000000"},
    }


def test_notice_without_extra_fields_still_has_the_stamp():
    assert strict_loads(wire.notice(wire.RESTORED_TAG, "S")) == {
        "tag": "salt_ws/bus/restored",
        "data": {"_stamp": "S"},
    }


def test_notice_tags_do_not_collide_with_salt_tags():
    assert wire.GAP_TAG.startswith("salt_ws/")
    assert wire.RESTORED_TAG.startswith("salt_ws/")
    assert wire.GAP_TAG != wire.RESTORED_TAG


def test_close_codes():
    assert wire.CLOSE_GOING_AWAY == 1001  # RFC 6455 "going away"
    assert 4000 <= wire.CLOSE_TOO_SLOW <= 4999  # the application's private range


# -- property: anything msgpack can carry encodes to strict JSON -------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.binary(),
)
keys = st.one_of(
    st.text(), st.integers(), st.binary(), st.booleans(), st.tuples(st.integers(), st.text())
)
payloads = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children),
        st.tuples(children, children),
        st.frozensets(st.integers()),
        st.sets(st.integers()),
        st.dictionaries(keys, children),
    ),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None, database=None)
@given(tag=st.text(), data=payloads)
def test_any_payload_encodes_to_strict_json(tag, data):
    text = wire.encode_event(tag, data)
    assert not text.endswith("\n")
    decoded = strict_loads(text)
    assert set(decoded) == {"tag", "data"}
    assert decoded["tag"] == tag
    text.encode("utf-8")


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(),
    ),
    lambda children: st.one_of(st.lists(children), st.dictionaries(st.text(), children)),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None, database=None)
@given(data=json_values)
def test_json_payloads_round_trip_exactly(data):
    assert strict_loads(wire.encode_event("t", data)) == {"tag": "t", "data": data}


@pytest.mark.parametrize("depth", [100, 500, 900])
def test_deeply_nested_odd_payload_still_encodes(depth):
    data: Any = b"\xff"
    for _ in range(depth):
        data = [data]
    decoded = strict_loads(wire.encode_event("salt/deep", data))
    assert decoded["tag"] == "salt/deep"
    assert "<nested too deep>" in json.dumps(decoded) or depth < wire.MAX_DEPTH


def test_include_master_adds_the_master_id_to_events_and_notices():
    assert strict_loads(wire.encode_event("t", {"a": 1}, "mom")) == {
        "tag": "t",
        "data": {"a": 1},
        "master": "mom",
    }
    assert strict_loads(wire.notice(wire.GAP_TAG, "now", "m2", missed=True))["master"] == "m2"
    assert "master" not in strict_loads(wire.encode_event("t", {}))


def _parse_frame(raw: bytes) -> tuple[int, str]:
    """A minimal RFC 6455 reader for server (unmasked) frames: (opcode byte, text)."""
    first, second = raw[0], raw[1]
    assert second & 0x80 == 0, "server frames are not masked"
    size, offset = second & 0x7F, 2
    if size == 126:
        size, offset = int.from_bytes(raw[2:4], "big"), 4
    elif size == 127:
        size, offset = int.from_bytes(raw[2:10], "big"), 10
    assert len(raw) == offset + size
    return first, raw[offset:].decode("utf-8")


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
def test_frame_is_one_final_text_frame_with_the_right_length(length):
    text = "é" * (length // 2) + "x" * (length % 2)
    first, decoded = _parse_frame(wire.frame(text))
    assert first == 0x81  # FIN + text opcode
    assert decoded == text


def test_the_frame_function_keeps_nothing():
    """Frames are cached only by a FrameCache the engine owns, bounded in bytes."""
    assert not hasattr(wire.frame, "cache_info")


# -- FrameCache: frames shared by every client, bounded in bytes ------------------------------


def test_a_cached_frame_is_built_once_per_message():
    cache = wire.FrameCache(1 << 20)
    text = wire.encode_event("salt/frame/once", {"n": 1})
    first = cache.frame(text)
    assert cache.frame(text) is first
    assert first == wire.frame(text)
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["entries"]) == (1, 1, 1)


def test_a_cache_of_1_mb_messages_never_holds_more_than_its_bound():
    bound = 4 * 1024 * 1024
    cache = wire.FrameCache(bound)
    for n in range(100):
        text = f"{n:08d}" + "x" * (1024 * 1024)
        assert cache.frame(text) == wire.frame(text)
        assert cache.frame(text) is cache.frame(text)  # fan-out to several clients: hits
        assert 0 < cache.bytes <= bound
    stats = cache.stats()
    assert stats["bytes"] <= stats["limit_bytes"] == bound
    assert stats["entries"] < 4  # each entry costs its text and its frame
    assert stats["misses"] == 100
    assert stats["hits"] == 200
    assert stats["evictions"] == 100 - stats["entries"]


def test_the_least_recently_used_frame_is_evicted_first():
    one = len(wire.frame("a" * 1000)) + wire.text_size("a" * 1000)
    cache = wire.FrameCache(2 * one)
    a, b, c = "a" * 1000, "b" * 1000, "c" * 1000
    cache.frame(a)
    cache.frame(b)
    cache.frame(a)  # a is now the most recent
    cache.frame(c)  # evicts b
    hits = cache.stats()["hits"]
    cache.frame(a)
    assert cache.stats()["hits"] == hits + 1
    cache.frame(b)
    assert cache.stats()["misses"] == 4


def test_a_message_larger_than_the_whole_cache_is_framed_but_not_kept():
    cache = wire.FrameCache(1000)
    text = "x" * 5000
    assert cache.frame(text) == wire.frame(text)
    stats = cache.stats()
    assert (stats["bytes"], stats["entries"], stats["uncached"]) == (0, 0, 1)


def test_a_zero_bound_caches_nothing():
    cache = wire.FrameCache(0)
    text = wire.encode_event("t", {"n": 1})
    assert cache.frame(text) == wire.frame(text)
    assert cache.frame(text) is not cache.frame(text)
    stats = cache.stats()
    assert (stats["bytes"], stats["entries"], stats["hits"]) == (0, 0, 0)


def test_a_negative_bound_is_refused():
    with pytest.raises(ValueError):
        wire.FrameCache(-1)


def test_a_lone_surrogate_is_framed_as_valid_utf8():
    text = wire.encode_event("t", {"a": "\ud800 ok \u00e9"})
    data = wire.frame(text)[2:]
    assert data.decode("utf-8") == '{"tag":"t","data":{"a":"\ufffd ok \u00e9"}}'


def test_every_close_code_is_explained_and_in_the_readme():
    import pathlib

    readme = (pathlib.Path(__file__).parents[2] / "README.md").read_text()
    for code in wire.CloseCode:
        assert code.explanation, code
        assert f"close **{int(code)}**" in readme, code
    assert wire.CLOSE_TOO_SLOW == 4001 and isinstance(wire.CLOSE_TOO_SLOW, wire.CloseCode)

"""Shared fixtures and helpers for the unit tests: throwaway TLS material, a hub client."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from salt_ws.acl import ADMIN
from salt_ws.hub import Channel
from salt_ws.pipeline import Group
from tests.certs import key_pem, self_signed


@dataclasses.dataclass(frozen=True)
class TLSFiles:
    """PEM files of a self-signed ``localhost`` certificate and friends."""

    crt: pathlib.Path  # the certificate alone
    key: pathlib.Path  # its private key alone
    combined: pathlib.Path  # certificate followed by its key, one file
    other_key: pathlib.Path  # a valid key that does not match ``crt``
    garbage: pathlib.Path  # not PEM at all


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    root = tmp_path_factory.mktemp("tls")
    crt_pem, key = self_signed("localhost")
    files = TLSFiles(
        crt=root / "server.crt",
        key=root / "server.key",
        combined=root / "server.pem",
        other_key=root / "other.key",
        garbage=root / "garbage.pem",
    )
    files.crt.write_bytes(crt_pem)
    files.key.write_bytes(key)
    files.combined.write_bytes(crt_pem + key)
    files.other_key.write_bytes(key_pem(ec.generate_private_key(ec.SECP256R1())))
    files.garbage.write_bytes(b"this is not a PEM file\n")
    return files


class Client:
    """A subscriber that records what the engine's hub queues for it."""

    def __init__(self, engine: Any, audience: str = ADMIN, channel: Channel = Channel.ALL_EVENTS):
        key = Group(audience) if channel is Channel.ALL_EVENTS else audience
        self.sub = engine.hub.subscribe(
            channel, lambda: None, self._cut, audience=audience, key=key
        )
        self.cuts: list[int] = []

    def _cut(self, code: int, reason: str) -> None:
        self.cuts.append(code)

    def received(self) -> list[str]:
        return self.sub.outbox.take(10_000)

"""Per-client bearer tokens (no gRPC here: the servicer hands over the metadata value).

Each client has its own token; the server keeps only SHA-256 digests of them, so a tokens
file may hold either the tokens or ``"sha256:<64 hex>"`` digests::

    {"phone-0017": "kq3...long random string...", "phone-0018": "sha256:9f86d08..."}

A client sends ``authorization: Bearer <token>`` with every call; the token decides which
client it is (a ``client_id`` in a request must agree).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

__all__ = ["TokenRegistry", "generate_token", "token_digest"]

_DIGEST_PREFIX = "sha256:"
_MIN_TOKEN_CHARS = 16


def token_digest(token: str) -> str:
    """The ``sha256:<hex>`` form of a token (what a tokens file may store)."""
    return _DIGEST_PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()


def generate_token() -> str:
    """A new random token (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


class TokenRegistry:
    """Maps bearer tokens to client ids.

    Parameters
    ----------
    tokens : mapping of str to str
        Client id to its token, or to ``"sha256:<hex>"`` of it.

    Raises
    ------
    ValueError
        An empty or short token, a malformed digest, or two clients with one token.
    """

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._by_digest: dict[bytes, str] = {}
        for client_id, value in tokens.items():
            if not isinstance(client_id, str) or not client_id or len(client_id) > 256:
                raise ValueError(f"client ids must be non-empty strings, got {client_id!r}")
            if not isinstance(value, str):
                raise ValueError(f"the token of {client_id!r} must be a string")
            if value.startswith(_DIGEST_PREFIX):
                try:
                    digest = bytes.fromhex(value[len(_DIGEST_PREFIX) :])
                except ValueError:
                    digest = b""
                if len(digest) != 32:
                    raise ValueError(f"the token digest of {client_id!r} is not 64 hex digits")
            else:
                if len(value) < _MIN_TOKEN_CHARS:
                    raise ValueError(
                        f"the token of {client_id!r} is shorter than {_MIN_TOKEN_CHARS} characters"
                    )
                digest = hashlib.sha256(value.encode("utf-8")).digest()
            if digest in self._by_digest:
                raise ValueError(f"{client_id!r} and {self._by_digest[digest]!r} share a token")
            self._by_digest[digest] = client_id

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> TokenRegistry:
        """Read a JSON object of client id to token (or digest)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read the tokens file {os.fspath(path)!r}: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{os.fspath(path)!r} must hold a JSON object")
        return cls(data)

    def __len__(self) -> int:
        return len(self._by_digest)

    def client_for(self, authorization: str | None) -> str | None:
        """The client of an ``authorization`` metadata value, or None.

        Parameters
        ----------
        authorization : str or None
            ``"Bearer <token>"``.
        """
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        # Looked up by the token's SHA-256: the timing of the lookup says nothing about
        # the token itself.
        return self._by_digest.get(hashlib.sha256(token.strip().encode("utf-8")).digest())

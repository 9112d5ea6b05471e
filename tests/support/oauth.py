"""A pretend identity provider for OAuth tests: keys the test generates, a JWKS served on
loopback, and access tokens signed with those keys (PyJWT, as a real provider's would be)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

ISSUER = "https://idp.example.test/"  # never contacted: only compared with the tokens' iss
AUDIENCE = "http://127.0.0.1:8000/mcp"


@dataclass
class SigningKey:
    """A private key, its ``kid`` and the algorithm it signs with."""

    kid: str
    algorithm: str
    private: PrivateKeyTypes

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        return {**_jwk_of(public), "kid": self.kid, "use": "sig", "alg": self.algorithm}

    def public_pem(self) -> bytes:
        public = self.private.public_key()
        return bytes(
            public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def _jwk_of(public: Any) -> dict[str, Any]:
    if isinstance(public, rsa.RSAPublicKey):
        return json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))  # type: ignore[no-any-return]
    if isinstance(public, ec.EllipticCurvePublicKey):
        return json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))  # type: ignore[no-any-return]
    return json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(public))  # type: ignore[no-any-return]


def rsa_key(kid: str = "rsa-1") -> SigningKey:
    return SigningKey(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_key(kid: str = "ec-1") -> SigningKey:
    return SigningKey(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


def ed_key(kid: str = "ed-1") -> SigningKey:
    return SigningKey(kid, "EdDSA", ed25519.Ed25519PrivateKey.generate())


def claims(**changes: Any) -> dict[str, Any]:
    """A valid access token's claims (an hour left), with ``changes`` (None drops a claim)."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-alice",
        "email": "alice@example.test",
        "iat": now,
        "exp": now + 3600,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def token(
    key: SigningKey, *, kid: str | None = None, alg: str | None = None, **changes: Any
) -> str:
    """An access token signed by ``key`` (its header naming ``kid``, default the key's)."""
    return jwt.encode(
        claims(**changes),
        key.private,  # type: ignore[arg-type]
        algorithm=alg or key.algorithm,
        headers={"kid": kid or key.kid},
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(kid: str = "rsa-1", **changes: Any) -> str:
    """An ``alg: none`` token (no signature at all)."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
    return f"{header}.{_b64(json.dumps(claims(**changes)).encode())}."


def hs256_with(secret: bytes, kid: str = "rsa-1", **changes: Any) -> str:
    """An HS256 token whose HMAC "secret" is ``secret`` (the classic: the public key's PEM)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = _b64(json.dumps(claims(**changes)).encode())
    mac = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(mac)}"


def tampered(signed: str, **changes: Any) -> str:
    """``signed`` with its claims rewritten and its signature kept."""
    header, body, signature = signed.split(".")
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    data.update(changes)
    return f"{header}.{_b64(json.dumps(data).encode())}.{signature}"


@dataclass
class JWKSServer:
    """A JWKS on loopback: ``keys`` are served at ``url``; ``status``/``body`` can break it."""

    keys: list[SigningKey]
    url: str = ""
    status: int = 200
    body: bytes | None = None
    reads: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def document(self) -> bytes:
        if self.body is not None:
            return self.body
        return json.dumps({"keys": [k.jwk() for k in self.keys]}).encode()


@contextlib.contextmanager
def jwks_server(*keys: SigningKey) -> Iterator[JWKSServer]:
    state = JWKSServer(list(keys))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with state.lock:
                state.reads += 1
                status, body = state.status, state.document()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/jwks"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)

"""Whom a shared remote cache trusts: signed documents, and documents that match their key.

Like Nix's signed binary caches: a runner holding the key (``BRAINSMITH_REMOTE_CACHE_KEY``,
a shared secret) signs every document it uploads that says what an entry is (the
entry's manifest document, a failure record, a verification record) with an
HMAC-SHA256 over the document's canonical JSON; the blobs are covered by the digests
those documents record. A runner holding the key uses only documents signed with it.
Without a key nothing is signed or checked: every runner then trusts whoever can
write to the bucket.

Whatever the key, a document is used only for the key it was asked for: its key fields
name that key and the components it records hash to it (``keys.segment_key``), so a
document copied from another entry, its key fields edited, is refused unsigned too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections.abc import Mapping
from typing import Any

from .errors import Damaged, Untrusted
from .stats import RemoteStats

#: The environment variable holding the signing key.
ENV = "BRAINSMITH_REMOTE_CACHE_KEY"
ALGORITHM = "hmac-sha256"
SIGNATURE = "signature"


class Signer:
    """Signs and checks documents with one shared key."""

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()
        #: names the key in signatures (a digest: the key itself never leaves the runner)
        self.key_id = hashlib.sha256(b"brainsmith-remote-cache-key:" + self._secret).hexdigest()[
            :12
        ]

    def sign(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``doc`` with its signature."""
        mac = self._mac(doc)
        return {**doc, SIGNATURE: {"alg": ALGORITHM, "key_id": self.key_id, "value": mac}}

    def check(self, doc: Mapping[str, Any]) -> str | None:
        """None if ``doc`` is signed with this key, else why it is not trusted."""
        signature = doc.get(SIGNATURE)
        if not isinstance(signature, dict):
            return "is not signed"
        if signature.get("alg") != ALGORITHM or signature.get("key_id") != self.key_id:
            return f"is signed with another key ({signature.get('key_id')!r})"
        if not hmac.compare_digest(str(signature.get("value")), self._mac(doc)):
            return "has a signature that does not match its content (edited after signing)"
        return None

    def _mac(self, doc: Mapping[str, Any]) -> str:
        body = {name: value for name, value in doc.items() if name != SIGNATURE}
        return hmac.new(self._secret, canonical_json(body), hashlib.sha256).hexdigest()


def signer_from_env(environ: Mapping[str, str] | None = None) -> Signer | None:
    """The signer of ``BRAINSMITH_REMOTE_CACHE_KEY``, or None when it is unset or empty."""
    secret = (os.environ if environ is None else environ).get(ENV, "")
    return Signer(secret) if secret else None


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


def components_key(components: Any) -> str | None:
    """The key that ``components`` (as ``keys.segment_key`` made them) hash to."""
    if not isinstance(components, dict):
        return None
    return hashlib.sha256(canonical_json(components)).hexdigest()


def mismatch(key: str, doc: Any, record: Any) -> str | None:
    """None if the document ``doc`` (and ``record``, the manifest or failure record it
    carries) describes ``key``; else why not."""
    if not isinstance(doc, dict) or doc.get("key") != key:
        named = doc.get("key") if isinstance(doc, dict) else None
        return f"names key {named!r}, not {key}"
    if not isinstance(record, dict):
        return "holds no manifest"
    if record.get("key") != key:
        return f"holds the manifest of key {record.get('key')!r}, not {key}"
    found = components_key(record.get("components"))
    if found != key:
        return (
            f"records components that hash to {found}, not to {key} (copied from another "
            "entry, its key fields edited)"
        )
    return None


class DocumentCheck:
    """The tier's use of trust: documents checked for their key (and signature, with a
    signer) and signed on upload, the time spent counted in ``stats``."""

    def __init__(self, signer: Signer | None, stats: RemoteStats) -> None:
        self.signer = signer
        self.stats = stats

    def signature(self, doc: Any, where: str, file: str) -> None:
        """With a signer: Untrusted unless ``doc`` is signed with its key."""
        if self.signer is None:
            return
        started = time.perf_counter()
        why = self.signer.check(doc) if isinstance(doc, dict) else "is not a JSON object"
        self.stats.add(signatures=1, signature_seconds=time.perf_counter() - started)
        if why is not None:
            raise Untrusted(where, file, why)

    def document(self, key: str, doc: Any, body: Any, where: str, file: str) -> None:
        """A document is used only for its key, and with a signing key only if signed
        with it: Damaged or Untrusted if not."""
        self.signature(doc, where, file)
        why = mismatch(key, doc, body)
        if why is not None:
            raise Damaged(where, file, why)

    def sign(self, doc: dict[str, Any]) -> dict[str, Any]:
        if self.signer is None:
            return doc
        started = time.perf_counter()
        signed = self.signer.sign(doc)
        self.stats.add(signatures=1, signature_seconds=time.perf_counter() - started)
        return signed

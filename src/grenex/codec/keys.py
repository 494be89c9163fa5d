"""Ed25519 keys, signatures and key files, spelled as SPEC §8 says.

Theory of operation
-------------------
Every key, signature and seed on the wire or on disk is *canonical* base64url without padding
(RFC 4648 §5): exactly 43 characters for 32 bytes, 86 for 64, drawn from ``A-Za-z0-9-_``, and
re-encoding the decoded bytes gives the same text back (so the unused low bits of the last
character are zero).  There is exactly one spelling of each value: a key string can be used as a
dictionary key, compared for equality, and hashed into state without normalising it first.

Validity follows libsodium (PyNaCl), never our own arithmetic:

* a **public key** is valid iff ``crypto_core_ed25519_is_valid_point`` accepts it (canonical
  encoding, on the curve, in the main subgroup, not of small order).  Keys are checked once,
  when they enter the state (genesis, ``register``, ``rotate_key``, ``admit``/``join``);
* a **signature** verifies iff ``crypto_sign_open`` accepts it — the same rules as
  ``crypto_sign_verify_detached`` (S < L, R and A canonical and not of small order, the
  cofactorless equation).  :func:`verify_raw` is exactly one libsodium call (which releases the
  GIL, so callers may run it in threads) and never raises.

What is signed (:func:`signing_message`): the UTF-8 bytes
``"grenex/1\\n" + cluster id + "\\n" + TEXT``, where the cluster id is the lowercase hex SHA-256
of the genesis file (``grenex.codec.genesis``) and TEXT the envelope's command text.

A **key file** holds the 32-byte seed, canonical base64url (43 characters), optionally followed
by one ``"\\n"`` and nothing else.  :func:`write_key_file` creates it with mode 0600 and refuses
to overwrite an existing file.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path
from typing import Final

import nacl.bindings
import nacl.exceptions
import nacl.utils

__all__ = [
    "KEY_CHARS",
    "SEED_CHARS",
    "SIGNATURE_CHARS",
    "SIGNING_PREFIX",
    "KeyFileError",
    "SecretKey",
    "b64url_decode",
    "b64url_encode",
    "is_valid_key",
    "parse_key",
    "parse_key_file",
    "parse_seed",
    "parse_signature",
    "read_key_file",
    "sign_text",
    "signing_message",
    "verify_raw",
    "verify_text",
    "write_key_file",
]

KEY_CHARS: Final = 43
SEED_CHARS: Final = 43
SIGNATURE_CHARS: Final = 86
SIGNING_PREFIX: Final = b"grenex/1\n"

_KEY_BYTES: Final = 32
_SIG_BYTES: Final = 64
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]*")
_PAD: Final = ("", "", "==", "=")  # by length % 4 (a length % 4 == 1 never decodes)


class KeyFileError(ValueError):
    """A key file that is missing, unreadable, not a canonical seed, or (when writing) exists."""


def b64url_encode(data: bytes) -> str:
    """``data`` as canonical base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: object, size: int | None = None) -> bytes | None:
    """The bytes of a canonical unpadded base64url string (of ``size`` bytes when given), or
    None: wrong type or length, a character outside the alphabet, padding, or a spelling that
    does not re-encode to itself.  Never raises."""
    if type(text) is not str or not text.isascii() or _B64URL.fullmatch(text) is None:
        return None
    n = len(text)
    if n % 4 == 1 or (size is not None and n != (size * 4 + 2) // 3):
        return None
    try:
        raw = base64.urlsafe_b64decode(text + _PAD[n % 4])
    except (binascii.Error, ValueError):  # pragma: no cover - excluded by the checks above
        return None
    if b64url_encode(raw) != text:
        return None
    return raw


def parse_key(text: object) -> bytes | None:
    """The 32 bytes of a valid public key (canonical spelling and
    ``crypto_core_ed25519_is_valid_point``), else None."""
    raw = b64url_decode(text, _KEY_BYTES)
    if raw is None or not nacl.bindings.crypto_core_ed25519_is_valid_point(raw):
        return None
    return raw


def is_valid_key(text: object) -> bool:
    """True iff ``text`` is a valid public key (see :func:`parse_key`)."""
    return parse_key(text) is not None


def parse_signature(text: object) -> bytes | None:
    """The 64 bytes of a canonically spelled signature, else None.  Whether it verifies (S < L
    and the rest) is :func:`verify_raw`'s business."""
    return b64url_decode(text, _SIG_BYTES)


def parse_seed(text: object) -> bytes | None:
    """The 32 bytes of a canonically spelled seed, else None (every 32-byte seed is usable)."""
    return b64url_decode(text, _KEY_BYTES)


def signing_message(cluster_id: str, text: bytes) -> bytes:
    """The bytes a signature covers: ``"grenex/1\\n" + cluster id + "\\n" + TEXT``."""
    return b"".join((SIGNING_PREFIX, cluster_id.encode("ascii"), b"\n", text))


def verify_raw(key: bytes, message: bytes, signature: bytes) -> bool:
    """libsodium's verdict on ``signature`` (64 bytes) of ``message`` by ``key`` (32 bytes):
    exactly one ``crypto_sign_open`` call.  Wrong lengths are False.  Never raises."""
    if len(key) != _KEY_BYTES or len(signature) != _SIG_BYTES:
        return False
    try:
        nacl.bindings.crypto_sign_open(signature + message, key)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False
    return True


def verify_text(key: str, cluster_id: str, text: bytes, signature: str) -> bool:
    """Whether ``signature`` (base64url) is ``key``'s (base64url) on TEXT for ``cluster_id``.
    A key that is not valid, or a signature not canonically spelled, is False."""
    raw_key = parse_key(key)
    raw_sig = parse_signature(signature)
    if raw_key is None or raw_sig is None:
        return False
    return verify_raw(raw_key, signing_message(cluster_id, text), raw_sig)


class SecretKey:
    """An Ed25519 signing key, held as its 32-byte seed."""

    __slots__ = ("_pk", "_seed", "_sk")

    def __init__(self, seed: bytes) -> None:
        if type(seed) is not bytes or len(seed) != _KEY_BYTES:
            raise ValueError("an Ed25519 seed is 32 bytes")
        pk, sk = nacl.bindings.crypto_sign_seed_keypair(seed)
        self._seed = seed
        self._pk: bytes = pk
        self._sk: bytes = sk

    @classmethod
    def generate(cls) -> SecretKey:
        """A new key from the operating system's random source."""
        return cls(nacl.utils.random(_KEY_BYTES))

    @classmethod
    def from_text(cls, text: str) -> SecretKey:
        """From a canonical base64url seed (43 characters); ValueError otherwise."""
        seed = parse_seed(text)
        if seed is None:
            raise ValueError("not a canonical base64url Ed25519 seed (43 characters)")
        return cls(seed)

    @property
    def seed(self) -> bytes:
        return self._seed

    @property
    def public_bytes(self) -> bytes:
        return self._pk

    @property
    def public_key(self) -> str:
        """The public key, canonical base64url (43 characters)."""
        return b64url_encode(self._pk)

    def seed_text(self) -> str:
        """The seed, canonical base64url (what a key file holds)."""
        return b64url_encode(self._seed)

    def sign_raw(self, message: bytes) -> bytes:
        """The 64-byte detached signature of ``message``."""
        signed: bytes = nacl.bindings.crypto_sign(message, self._sk)
        return signed[:_SIG_BYTES]

    def sign(self, cluster_id: str, text: bytes) -> str:
        """The SPEC §8 signature (base64url, 86 characters) of TEXT for ``cluster_id``."""
        return b64url_encode(self.sign_raw(signing_message(cluster_id, text)))

    def __repr__(self) -> str:  # never print the seed
        return f"SecretKey(public_key={self.public_key!r})"


def sign_text(key: SecretKey, cluster_id: str, text: bytes) -> str:
    """``key.sign(cluster_id, text)``, as a function."""
    return key.sign(cluster_id, text)


def parse_key_file(data: bytes) -> SecretKey:
    """A key file's bytes: the canonical seed, optionally one trailing ``"\\n"``."""
    body = data[:-1] if data.endswith(b"\n") else data
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError("a key file holds a base64url seed (43 characters)") from None
    seed = parse_seed(text)
    if seed is None:
        raise KeyFileError("a key file holds a canonical base64url seed (43 characters)")
    return SecretKey(seed)


def read_key_file(path: str | os.PathLike[str]) -> SecretKey:
    """The key in the file at ``path``; KeyFileError when missing, unreadable or malformed."""
    try:
        with open(path, "rb") as f:
            data = f.read(SEED_CHARS + 2)  # more than a key file may hold is malformed anyway
    except OSError as e:
        raise KeyFileError(f"cannot read key file {os.fspath(path)!r}: {e.strerror}") from None
    return parse_key_file(data)


def write_key_file(path: str | os.PathLike[str], key: SecretKey) -> None:
    """Create the key file at ``path`` (mode 0600, the seed and one ``"\\n"``); KeyFileError
    when it exists already (never overwritten) or cannot be written."""
    p = Path(path)
    data = key.seed_text().encode("ascii") + b"\n"
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        raise KeyFileError(f"key file {os.fspath(p)!r} exists; not overwritten") from None
    except OSError as e:
        raise KeyFileError(f"cannot create key file {os.fspath(p)!r}: {e.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # the umask may have taken bits away, never added them: be exact
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as e:
        os.close(fd)
        p.unlink(missing_ok=True)
        raise KeyFileError(f"cannot write key file {os.fspath(p)!r}: {e.strerror}") from None
    os.close(fd)

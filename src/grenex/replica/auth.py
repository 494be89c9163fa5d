"""Accounts, keys, nonces and members: SPEC §8 checks 3–6 as a pure, deterministic state machine.

Theory of operation
-------------------
:class:`Auth` is the replicated part of §8: every replica builds it from the same genesis and
feeds it the same log, so every replica takes the same decisions and holds the same bytes
(:meth:`Auth.snapshot`, :meth:`Auth.state_hash`).  It holds:

* **accounts**: name → key (and key → name: a key is bound to at most one account).  The
  operator's account exists from the genesis; every other one is made by ``register``;
* per account, the **nonce window**: the ``limits.nonces`` highest consumed nonces, each with
  the SHA-256 of its TEXT and its outcome (log ``seq``, entry ``time``, and the events as JSON
  bytes, or None once dropped);
* **nodes**: every node id ever used (genesis voters, ``admit``, ``join``) with its key, cert
  and role (``voter``, ``learner``, or ``removed`` — ids are never reused).

One envelope (already through §8 checks 1–2, ``grenex.codec.envelope``) goes through:

1. :meth:`Auth.check` — checks 2 (the nonce is at most a day ahead of the entry's time), 3
   (signer, signature), 4 (register's name and key), 5 (the window).  Pure: it changes
   nothing, so the receiving node and the leader run it against their applied state before
   proposing, and every replica runs it again at apply.  It answers :class:`Reject` (nothing
   consumed), :class:`Duplicate` (the first outcome; the envelope is not executed again) or
   :class:`Fresh`.
2. On :class:`Fresh`, at apply only: :meth:`Auth.consume` (the nonce is used up now, whatever
   follows), then per command :meth:`Auth.permit` (check 6: the operator rules, membership,
   limits; a reason code or None), then :meth:`Auth.execute` for the account and membership
   commands (:data:`~grenex.codec.envelope.ACCOUNT_TYPES`) or the engine for the others, and
   finally :meth:`Auth.record_outcome` with the per-command event lists.
   :meth:`Auth.apply` does all of step 2 (and step 1) in that order, with the engine given as a
   callback.

The window, exactly as §8 check 5: a kept nonce with the same TEXT digest is a duplicate, with
another TEXT ``stale_nonce``; an unkept nonce below the smallest kept while the window is full is
``stale_nonce``; anything else is fresh, is inserted, and the smallest kept nonce is evicted when
the window overflows.  Why this is exactly-once: a nonce leaves the window only as its smallest
member of a full window, and a full window stays full with a minimum that never decreases; so
every evicted nonce stays below the minimum forever and can never be fresh again.

``register`` and ``join`` have no window of their own to check: a register's nonce starts the
new account's window (its "first outcome" stays answerable after eviction because the account
keeps its register's digest, seq and time), and a join's retry is recognised by the digest kept
on the node it added.  Neither ever touches an existing account's window.

Signatures cost one libsodium call (:func:`grenex.codec.keys.verify_raw`); keys are checked for
validity (``crypto_core_ed25519_is_valid_point``) once, when they enter the state.  A verdict
computed earlier (on receipt, in a thread) is reused when the caller passes it with the key it
was computed for and that key is still the signer's.

Outcomes are stored as JSON bytes of a list with one list of events per command (a single
command: one list), encoded by :func:`grenex.codec.encode_json`.  To bound memory, an account
keeps at most ``events_bytes_per_account_max`` bytes of outcome events: beyond it the events of
its lowest nonces are dropped to None (the outcome's ``seq`` and ``time`` stay).  That bound is
part of the state machine: every replica of a cluster must use the same value.

Determinism: dicts are iterated only through ``sorted``; nothing reads a clock (``time_ms`` is the
entry's time, from the log).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable
from typing import Any, Final, Protocol

import msgspec

from grenex.codec import encode_json
from grenex.codec.envelope import (
    ACCOUNT_TYPES,
    Envelope,
    KeyRotated,
    MemberAdded,
    MemberPromoted,
    MemberRemoved,
    Registered,
    nonce_in_time,
)
from grenex.codec.genesis import CertCheck, Genesis
from grenex.codec.keys import b64url_decode, parse_key, parse_signature, signing_message, verify_raw
from grenex.engine import Rejected, is_name

__all__ = [
    "AUTH_SNAPSHOT_VERSION",
    "KNOWN_TYPES",
    "ROLES",
    "Account",
    "Applied",
    "Auth",
    "AuthSnapshotError",
    "Counters",
    "Duplicate",
    "Fresh",
    "Kept",
    "Member",
    "Reject",
    "Verdict",
    "verify_envelope",
]

AUTH_SNAPSHOT_VERSION: Final = 1
ROLES: Final = ("learner", "removed", "voter")
# command types a rejected event names in ``cmd`` (anything else: null)
KNOWN_TYPES: Final = (
    "add_market",
    "admit",
    "amend",
    "cancel",
    "join",
    "place",
    "promote",
    "register",
    "remove",
    "rotate_key",
)
_OPERATOR_ONLY: Final = ("add_market", "admit", "promote", "remove")


class AuthSnapshotError(ValueError):
    """Bytes that are not a valid auth snapshot for this genesis."""


class Counters(Protocol):
    """What check 6's limits read from the engine (the integrator implements it)."""

    def markets(self) -> int:
        """Open markets."""
        ...

    def resting_orders(self, client: str) -> int:
        """The account's resting orders."""
        ...

    def used_ids(self, client: str) -> int:
        """The account's used order ids."""
        ...

    def client_counts(self, client: str) -> tuple[int, int]:
        """(resting orders, used order ids) of the account: both at once, for a place."""
        ...


# -- verdicts -------------------------------------------------------------------------------------


class Reject(msgspec.Struct, frozen=True, gc=False):
    """Checks 2–5 failed: nothing is consumed.  Pre-log: ``ERR_GRENEX_BAD_REQUEST: reason``;
    at apply: a logged ``rejected`` event."""

    reason: str


class Duplicate(msgspec.Struct, frozen=True, gc=False):
    """The envelope was executed before: its first outcome (``events`` None when dropped)."""

    seq: int
    time: int
    events: bytes | None


class Fresh(msgspec.Struct, frozen=True, gc=False):
    """Checks 2–5 passed: at apply, consume and execute."""

    signer: bytes  # the 32-byte key whose signature verified


Verdict = Reject | Duplicate | Fresh


class Applied(msgspec.Struct, frozen=True, gc=False):
    """What :meth:`Auth.apply` did with one envelope at ``seq``.

    * ``verdict`` :class:`Reject`: ``results`` is one list holding one ``rejected`` event;
    * :class:`Duplicate`: ``results`` is empty, the answer is ``verdict.events`` (nothing ran,
      nothing is emitted to the stream);
    * :class:`Fresh`: ``results`` has one event list per command, in order (for a batch the
      integrator adds ``n``), and ``outcome`` is what the window stores for it.
    """

    verdict: Verdict
    results: list[list[Any]]
    outcome: bytes | None = None


# -- the state ------------------------------------------------------------------------------------


class Kept(msgspec.Struct, array_like=True, gc=False):
    """One kept nonce: its TEXT's digest and its outcome."""

    nonce: int
    digest: bytes
    seq: int
    time: int
    events: bytes | None


class Account:
    """One account: its key and nonce window (``nonces`` ascending, ``kept`` by nonce)."""

    __slots__ = (
        "created_seq",
        "created_time",
        "events_bytes",
        "kept",
        "key",
        "key_raw",
        "name",
        "nonces",
        "register_digest",
    )

    def __init__(
        self,
        name: str,
        key: str,
        key_raw: bytes,
        register_digest: bytes | None,
        created_seq: int,
        created_time: int,
    ) -> None:
        self.name = name
        self.key = key
        self.key_raw = key_raw
        self.register_digest = register_digest  # None for the genesis operator
        self.created_seq = created_seq
        self.created_time = created_time
        self.nonces: list[int] = []
        self.kept: dict[int, Kept] = {}
        self.events_bytes = 0  # sum of len(events) over kept outcomes


class Member(msgspec.Struct, gc=False):
    """A node id ever used: key, cert, role, and (for ``join``) what added it."""

    id: str
    key: str
    cert: str | None
    role: str
    digest: bytes | None  # the join's TEXT digest (None: genesis or admit)
    seq: int
    time: int


# -- snapshot wire --------------------------------------------------------------------------------


class _SnapAccount(msgspec.Struct, array_like=True, gc=False):
    name: str
    key: str
    register_digest: bytes | None
    created_seq: int
    created_time: int
    kept: list[Kept]


class _SnapMember(msgspec.Struct, array_like=True, gc=False):
    id: str
    key: str
    cert: str | None
    role: str
    digest: bytes | None
    seq: int
    time: int


class _Snap(msgspec.Struct, array_like=True, gc=False):
    v: int
    cluster_id: str
    accounts: list[_SnapAccount]
    members: list[_SnapMember]


_enc: Final = msgspec.msgpack.Encoder()
_dec: Final = msgspec.msgpack.Decoder(_Snap)


def verify_envelope(cluster_id: str, env: Envelope, key: bytes) -> bool:
    """Whether ``env``'s signature is ``key``'s (32 bytes): one libsodium call.  Safe to run
    in any thread; a malformed SIG is False."""
    sig = parse_signature(env.sig)
    return sig is not None and verify_raw(key, signing_message(cluster_id, env.text), sig)


class Auth:
    """See the module docstring."""

    __slots__ = (
        "_accounts",
        "_by_key",
        "_learners",
        "_member_keys",
        "_members",
        "cert_check",
        "cluster_id",
        "events_bytes_per_account_max",
        "genesis",
        "members_version",
        "nonces_max",
    )

    def __init__(
        self,
        genesis: Genesis,
        *,
        events_bytes_per_account_max: int = 65_536,
        cert_check: CertCheck | None = None,
    ) -> None:
        assert events_bytes_per_account_max >= 0
        self.genesis = genesis
        self.cluster_id = genesis.cluster_id
        self.nonces_max = genesis.limits.nonces
        self.events_bytes_per_account_max = events_bytes_per_account_max
        self.cert_check = cert_check
        self._accounts: dict[str, Account] = {}
        self._by_key: dict[str, str] = {}
        self._members: dict[str, Member] = {}
        self._member_keys: dict[str, str] = {}  # key -> id, current members only
        self._learners = 0
        self.members_version = 0  # bumped on every membership change (not replicated state)
        op = genesis.operator
        raw = parse_key(op.key)
        assert raw is not None, "a parsed genesis holds valid keys"
        self._add_account(Account(op.client, op.key, raw, None, 0, 0))
        for v in genesis.voters:
            self._add_member(Member(v.id, v.key, v.cert, "voter", None, 0, 0))

    # -- reads ----------------------------------------------------------------------------------

    def account_key(self, client: str) -> str | None:
        """The key bound to account ``client``, or None."""
        a = self._accounts.get(client)
        return a.key if a is not None else None

    def account_of_key(self, key: str) -> str | None:
        """The account ``key`` is bound to, or None."""
        return self._by_key.get(key)

    def account(self, client: str) -> Account | None:
        """The account itself (read only: do not mutate)."""
        return self._accounts.get(client)

    @property
    def accounts_count(self) -> int:
        return len(self._accounts)

    @property
    def learners_count(self) -> int:
        return self._learners

    def member(self, node: str) -> Member | None:
        """The node ``node`` (any role, ``removed`` included), or None if never used."""
        return self._members.get(node)

    def members(self) -> list[Member]:
        """Current members (voters and learners), by id."""
        ms = self._members
        return [ms[k] for k in sorted(ms) if ms[k].role != "removed"]

    def members_all(self) -> list[Member]:
        """Every node id ever used, removed ones too, by id."""
        ms = self._members
        return [ms[k] for k in sorted(ms)]

    def kept(self, client: str) -> list[Kept]:
        """The account's kept nonces, ascending (empty for an unknown account)."""
        a = self._accounts.get(client)
        return [a.kept[n] for n in a.nonces] if a is not None else []

    def signer(self, env: Envelope) -> bytes | Reject:
        """Check 3's key for ``env`` (32 bytes): for ``register`` and ``join`` the command's
        own ``key`` (``invalid_key`` when not valid), otherwise the account's
        (``unknown_client``).  For verifying off the apply path."""
        t = env.type
        if t in ("register", "join"):
            raw = parse_key(env.commands[0].get("key"))
            return raw if raw is not None else Reject("invalid_key")
        a = self._accounts.get(env.client)
        return a.key_raw if a is not None else Reject("unknown_client")

    # -- checks 2–5 -----------------------------------------------------------------------------

    def check(
        self,
        env: Envelope,
        time_ms: int,
        verified: bool | None = None,
        verified_key: bytes | None = None,
        verify: Callable[[Envelope, bytes], bool] | None = None,
    ) -> Verdict:
        """§8 checks 2 (time), 3, 4 and 5 against the current state; changes nothing.

        ``time_ms``: the entry's time (pre-log: the node's clock).  ``verified``: None to
        verify now; a bool is a verdict computed earlier for ``verified_key`` (when given, it
        is reused only if that is still the signer's key; otherwise verified again now).
        ``verify(env, key)``: how to verify now (e.g. a cache of verdicts; a pure function
        of its arguments); default one libsodium call."""
        if not nonce_in_time(env.nonce, time_ms):
            return Reject("invalid_nonce")
        signer = self.signer(env)
        if type(signer) is Reject:
            return signer
        assert type(signer) is bytes
        if verified is None or (verified_key is not None and verified_key != signer):
            if verify is not None:
                verified = verify(env, signer)
            else:
                verified = verify_envelope(self.cluster_id, env, signer)
        if not verified:
            return Reject("bad_signature")
        t = env.type
        if t == "register":
            a = self._accounts.get(env.client)
            if a is not None:
                if a.register_digest == env.digest:
                    ev = Registered(a.created_seq, a.name, env.commands[0]["key"])
                    return Duplicate(a.created_seq, a.created_time, encode_json([[ev]]))
                return Reject("client_taken")
            if env.commands[0]["key"] in self._by_key:
                return Reject("key_taken")
            return Fresh(signer)
        if t == "join":
            m = self._members.get(env.client)
            if m is not None and m.digest == env.digest:
                ev2 = MemberAdded(m.seq, m.id, m.key, "learner")
                return Duplicate(m.seq, m.time, encode_json([[ev2]]))
            return Fresh(signer)
        a = self._accounts[env.client]  # signer() found it
        k = a.kept.get(env.nonce)
        if k is not None:
            if k.digest == env.digest:
                return Duplicate(k.seq, k.time, k.events)
            return Reject("stale_nonce")
        if len(a.nonces) >= self.nonces_max and env.nonce < a.nonces[0]:
            return Reject("stale_nonce")
        return Fresh(signer)

    # -- apply ----------------------------------------------------------------------------------

    def consume(self, env: Envelope, seq: int, time_ms: int) -> None:
        """Use up a :class:`Fresh` envelope's nonce (apply only, right after ``check``).
        ``register`` and ``join`` consume nothing here: a register's nonce starts its new
        account's window in :meth:`execute`; a join has no account."""
        t = env.type
        if t in ("register", "join"):
            return
        a = self._accounts[env.client]
        nonce = env.nonce
        assert nonce not in a.kept, (env.client, nonce)
        bisect.insort(a.nonces, nonce)
        a.kept[nonce] = Kept(nonce, env.digest, seq, time_ms, None)
        while len(a.nonces) > self.nonces_max:
            gone = a.kept.pop(a.nonces.pop(0))
            if gone.events is not None:
                a.events_bytes -= len(gone.events)

    def permit(self, client: str, cmd: dict[str, Any], counters: Counters) -> str | None:
        """Check 6 for one command of ``client`` (after :meth:`consume`): a reason, or None."""
        t = cmd.get("type")
        g = self.genesis
        if t in _OPERATOR_ONLY and client != g.operator.client:
            return "not_operator"
        if t == "place":
            resting, used = counters.client_counts(client)
            if resting >= g.limits.orders:
                return "limit_orders"
            if used >= g.limits.ids:
                return "limit_ids"
            return None
        if t == "add_market":
            return "limit_markets" if counters.markets() >= g.limits.markets else None
        if t == "register":
            if g.register != "open" and client != g.operator.client:
                return "not_operator"
            return "limit_accounts" if len(self._accounts) >= g.limits.accounts else None
        if t == "rotate_key":
            key = cmd.get("key")
            if parse_key(key) is None:
                return "invalid_key"
            assert type(key) is str
            owner = self._by_key.get(key)
            return "key_taken" if owner is not None and owner != client else None
        if t in ("admit", "join"):
            if t == "join":
                if g.join != "open":
                    return "not_operator"
                if cmd.get("node") != client:
                    return "invalid_command"
            node = cmd.get("node")
            if not is_name(node):
                return "invalid_command"
            key = cmd.get("key")
            if parse_key(key) is None or not self._cert_ok(cmd.get("cert"), key):
                return "invalid_key"
            if node in self._members or key in self._member_keys:
                return "node_exists"
            return "limit_learners" if self._learners >= g.limits.learners else None
        if t in ("promote", "remove"):
            node = cmd.get("node")
            m = self._members.get(node) if is_name(node) else None
            if m is None or m.role == "removed" or (t == "promote" and m.role != "learner"):
                return "unknown_node"
            return None
        return None

    def _cert_ok(self, cert: object, key: object) -> bool:
        der = b64url_decode(cert)
        if not der:
            return False
        return self.cert_check is None or self.cert_check(der, str(key))

    def execute(self, env: Envelope, seq: int, time_ms: int) -> list[Any]:
        """Carry out ``env``'s account or membership command (one of ACCOUNT_TYPES; they are
        never batched) after :meth:`permit` returned None; its events."""
        cmd = env.commands[0]
        t = cmd.get("type")
        client = env.client
        if t == "register":
            key = cmd["key"]
            raw = parse_key(key)
            assert raw is not None and client not in self._accounts and key not in self._by_key
            a = Account(client, key, raw, env.digest, seq, time_ms)
            self._add_account(a)
            a.nonces.append(env.nonce)
            a.kept[env.nonce] = Kept(env.nonce, env.digest, seq, time_ms, None)
            return [Registered(seq, client, key)]
        if t == "rotate_key":
            key = cmd["key"]
            raw = parse_key(key)
            assert raw is not None
            a = self._accounts[client]
            del self._by_key[a.key]
            a.key, a.key_raw = key, raw
            self._by_key[key] = client
            return [KeyRotated(seq, client, key)]
        if t in ("admit", "join"):
            node, key = cmd["node"], cmd["key"]
            digest = env.digest if t == "join" else None
            self._add_member(Member(node, key, cmd["cert"], "learner", digest, seq, time_ms))
            return [MemberAdded(seq, node, key, "learner")]
        if t == "promote":
            m = self._members[cmd["node"]]
            assert m.role == "learner"
            m.role = "voter"
            self._learners -= 1
            self.members_version += 1
            return [MemberPromoted(seq, m.id)]
        if t == "remove":
            m = self._members[cmd["node"]]
            if m.role == "learner":
                self._learners -= 1
            m.role = "removed"
            del self._member_keys[m.key]
            self.members_version += 1
            return [MemberRemoved(seq, m.id)]
        raise AssertionError(f"not an account command: {t!r}")

    def record_outcome(
        self, env: Envelope, results: list[list[Any]], data: bytes | None = None
    ) -> bytes | None:
        """Store ``env``'s outcome (one event list per command) with its kept nonce; returns
        the bytes stored (None when none: no window holds it, or it exceeds the per-account
        bound).  Lower nonces' events are dropped to stay within the bound.  ``data``: the
        outcome already encoded (``encode_json(results)``, byte for byte)."""
        a = self._accounts.get(env.client)
        if a is None or env.type == "join":
            return None
        k = a.kept.get(env.nonce)
        if k is None or k.digest != env.digest:
            return None
        if data is None:
            data = encode_json(results)
        cap = self.events_bytes_per_account_max
        if k.events is not None:
            a.events_bytes -= len(k.events)
            k.events = None
        if len(data) > cap:
            return None
        k.events = data
        a.events_bytes += len(data)
        if a.events_bytes > cap:
            for n in a.nonces:  # lowest nonces first
                o = a.kept[n]
                if o.events is not None and o is not k:
                    a.events_bytes -= len(o.events)
                    o.events = None
                    if a.events_bytes <= cap:
                        break
        return data

    def apply(
        self,
        env: Envelope,
        seq: int,
        time_ms: int,
        run: Callable[[dict[str, Any]], list[Any]],
        counters: Counters,
        verified: bool | None = None,
        verified_key: bytes | None = None,
        encode: Callable[[list[list[Any]]], bytes] | None = None,
        verify: Callable[[Envelope, bytes], bool] | None = None,
    ) -> Applied:
        """Checks 2–6 and the commands, at log position ``seq`` with the entry's time.
        ``run(cmd)`` applies one engine command (SPEC §2) and returns its events; ``encode``
        (optional) encodes the outcome exactly as :func:`grenex.codec.encode_json` would, for
        a caller that keeps the encoding for other uses."""
        v = self.check(env, time_ms, verified, verified_key, verify)
        if type(v) is Reject:
            return Applied(v, [[self.rejected(env, None, seq, v.reason)]])
        if type(v) is Duplicate:
            return Applied(v, [])
        self.consume(env, seq, time_ms)
        results: list[list[Any]] = []
        for cmd in env.commands:
            reason = self.permit(env.client, cmd, counters)
            if reason is not None:
                results.append([self.rejected(env, cmd, seq, reason)])
            elif cmd.get("type") in ACCOUNT_TYPES:
                results.append(self.execute(env, seq, time_ms))
            else:
                results.append(run(cmd))
        data = encode(results) if encode is not None else None
        return Applied(v, results, self.record_outcome(env, results, data))

    @staticmethod
    def rejected(env: Envelope, cmd: dict[str, Any] | None, seq: int, reason: str) -> Rejected:
        """The ``rejected`` event for a §8 failure: ``cmd`` the command's type (null for an
        unknown one or a whole batch), ``client`` always, ``id`` when a name, ``market`` for
        add_market when a name."""
        c = cmd if cmd is not None else (None if env.batch else env.commands[0])
        if c is None:
            return Rejected(seq, None, reason, env.client)
        t = c.get("type")
        oid = c.get("id")
        market = c.get("market") if t == "add_market" else None
        return Rejected(
            seq,
            t if t in KNOWN_TYPES else None,
            reason,
            env.client,
            oid if is_name(oid) else None,
            market if is_name(market) else None,
        )

    # -- snapshots ------------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Canonical MessagePack of the whole state (accounts by name, nonces ascending,
        members by id): equal states give equal bytes."""
        accs = self._accounts
        ms = self._members
        return _enc.encode(
            _Snap(
                AUTH_SNAPSHOT_VERSION,
                self.cluster_id,
                [
                    _SnapAccount(
                        a.name,
                        a.key,
                        a.register_digest,
                        a.created_seq,
                        a.created_time,
                        [a.kept[n] for n in a.nonces],
                    )
                    for a in (accs[name] for name in sorted(accs))
                ],
                [
                    _SnapMember(m.id, m.key, m.cert, m.role, m.digest, m.seq, m.time)
                    for m in (ms[i] for i in sorted(ms))
                ],
            )
        )

    def state_hash(self) -> str:
        """sha256 hex of :meth:`snapshot`: this part's contribution to the state hash."""
        return hashlib.sha256(self.snapshot()).hexdigest()

    @classmethod
    def restore(
        cls,
        genesis: Genesis,
        blob: bytes,
        *,
        events_bytes_per_account_max: int = 65_536,
        cert_check: CertCheck | None = None,
    ) -> Auth:
        """The state a :meth:`snapshot` wrote (``b""``: the genesis state).  Checks the form
        and invariants (not each key's curve point: they were checked when they came in)."""
        auth = cls(
            genesis,
            events_bytes_per_account_max=events_bytes_per_account_max,
            cert_check=cert_check,
        )
        if not blob:
            return auth
        try:
            s = _dec.decode(blob)
        except (msgspec.DecodeError, ValueError) as e:
            raise AuthSnapshotError(f"bad auth snapshot: {e}") from None
        if s.v != AUTH_SNAPSHOT_VERSION:
            raise AuthSnapshotError(f"unsupported auth snapshot version {s.v}")
        if s.cluster_id != genesis.cluster_id:
            raise AuthSnapshotError("auth snapshot of another cluster")
        auth._accounts.clear()
        auth._by_key.clear()
        auth._members.clear()
        auth._member_keys.clear()
        auth._learners = 0
        prev = ""
        for sa in s.accounts:
            raw = b64url_decode(sa.key, 32)
            if (
                not is_name(sa.name)
                or sa.name <= prev
                or raw is None
                or sa.key in auth._by_key
                or len(sa.kept) > auth.nonces_max
                or (sa.register_digest is not None and len(sa.register_digest) != 32)
            ):
                raise AuthSnapshotError(f"bad auth snapshot account {sa.name!r}")
            prev = sa.name
            a = Account(sa.name, sa.key, raw, sa.register_digest, sa.created_seq, sa.created_time)
            last = 0
            for k in sa.kept:
                if k.nonce <= last or len(k.digest) != 32:
                    raise AuthSnapshotError(f"bad auth snapshot nonces of {sa.name!r}")
                last = k.nonce
                a.nonces.append(k.nonce)
                a.kept[k.nonce] = k
                if k.events is not None:
                    a.events_bytes += len(k.events)
            auth._add_account(a)
        if genesis.operator.client not in auth._accounts:
            raise AuthSnapshotError("auth snapshot without the operator's account")
        prev = ""
        for sm in s.members:
            if not is_name(sm.id) or sm.id <= prev or sm.role not in ROLES:
                raise AuthSnapshotError(f"bad auth snapshot member {sm.id!r}")
            prev = sm.id
            if sm.role != "removed" and sm.key in auth._member_keys:
                raise AuthSnapshotError(f"bad auth snapshot member key of {sm.id!r}")
            auth._add_member(Member(sm.id, sm.key, sm.cert, sm.role, sm.digest, sm.seq, sm.time))
        return auth

    def _add_account(self, a: Account) -> None:
        self._accounts[a.name] = a
        self._by_key[a.key] = a.name

    def _add_member(self, m: Member) -> None:
        self.members_version += 1
        self._members[m.id] = m
        if m.role != "removed":
            self._member_keys[m.key] = m.id
        if m.role == "learner":
            self._learners += 1

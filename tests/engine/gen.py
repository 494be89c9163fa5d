"""A seeded generator of command lines for differential and snapshot tests.

``CommandGen(seed)`` draws a *profile* from its seed (how many clients, how wide the price
band, how much malformed input) and then yields JSON text lines, as a client or a hostile peer
would send them: every command type, several markets with different tick and lot, few clients
(so self-trade happens), every ``tif``/``post_only``/``stp`` value including invalid ones,
market orders, amends that stay in place or re-enter, cancels of live and dead ids, duplicate
ids, numbers written as strings or JSON numbers (trailing zeros, leading zeros, exponents,
signs, off-tick, at the 2^63 bound), bad names, ``null`` fields, wrong JSON types, unknown
fields, unknown types, non-objects, invalid JSON and invalid UTF-8.

Lines are built from JSON *fragments* so that a number can be written exactly as intended
(``100.50`` as a JSON number, not a float). Only ``random.Random(seed)`` is used: the same seed
always gives the same lines.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from .reference import ReferenceEngine, canonical

__all__ = ["MARKETS", "CommandGen", "MarketSpec"]


@dataclass(frozen=True)
class MarketSpec:
    name: str
    tick: str
    lot: str
    mid: int  # price band centre, in ticks


MARKETS = (
    MarketSpec("A", "1", "1", 1000),
    MarketSpec("B.x", "0.01", "0.001", 10050),
    MarketSpec("c:3", "0.5", "2", 40),
    MarketSpec("D-4", "25", "0.1", 8),
)

_TIFS = ("GTC", "IOC", "FOK")
_STPS = ("cancel_maker", "cancel_taker", "cancel_both")


def _s(value: object) -> str:
    """A JSON fragment for a plain value."""
    return json.dumps(value)


class CommandGen:
    """Yields JSON command lines (``str``, or ``bytes`` for invalid UTF-8); see module doc."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        r = self.r = random.Random(seed)
        self.clients = [f"c{i}" for i in range(r.randint(2, 5))]
        self.spread = r.randint(2, 8)  # price band half-width, in ticks
        self.max_lots = r.choice([3, 8, 20])
        self.garbage_rate = r.choice([0.02, 0.05, 0.1])
        self.bad_field_rate = r.choice([0.02, 0.05, 0.1])
        self.cancel_share = r.choice([0.04, 0.12])  # low: deeper books
        self.markets = list(MARKETS[: r.randint(2, len(MARKETS))])
        self.by_name = {m.name: m for m in MARKETS}
        self.next_id = 0
        # every (client, id, market) ever placed with valid names, newest last
        self.history: list[tuple[str, str, str]] = []
        # resting orders as seen through observe(): (client, id) -> (market, price, remaining)
        self.live: dict[tuple[str, str], tuple[str, Fraction, Fraction]] = {}
        self.extra_markets = 0

    def observe(self, events: list[dict[str, Any]]) -> None:
        """Learn which orders rest from the events of the last line (optional, but it makes
        cancels and amends hit live orders far more often)."""
        for ev in events:
            kind = ev["type"]
            if kind == "resting":
                key = (ev["client"], ev["id"])
                self.live[key] = (ev["market"], Fraction(ev["price"]), Fraction(ev["remaining"]))
            elif kind in ("filled", "cancelled"):
                self.live.pop((ev["client"], ev["id"]), None)
            elif kind == "amended":
                key = (ev["client"], ev["id"])
                if key in self.live:
                    self.live[key] = (ev["market"], Fraction(ev["price"]), Fraction(ev["qty"]))
            elif kind == "trade":
                key = (ev["maker_client"], ev["maker"])
                if key in self.live:
                    m, price, left = self.live[key]
                    self.live[key] = (m, price, left - Fraction(ev["qty"]))

    # ------------------------------------------------------------------ values

    def _decimal(self, value: Fraction) -> str:
        """A valid decimal for ``value``, written in one of the accepted ways."""
        r = self.r
        text = canonical(value)
        k = r.random()
        if k < 0.6:
            return _s(text)
        if k < 0.75:
            return text  # a JSON number
        if k < 0.85:
            zeros = "0" * r.randint(1, 3)
            padded = text + zeros if "." in text else text + "." + zeros
            return _s(padded) if r.random() < 0.5 else padded
        if k < 0.95:
            return _s("0" * r.randint(1, 2) + text)
        return text + ".0" if "." not in text else text + "0"  # JSON number, trailing zero

    def _bad_decimal(self, value: Fraction, step: Fraction) -> str:
        """Something that is not a valid price/quantity for ``step``."""
        r = self.r
        text = canonical(value)
        return r.choice(
            [
                _s("-" + text),
                "-" + text,
                _s(text + "e0"),
                text + "e0",
                "1E2",
                _s("1e3"),
                _s(" " + text),
                _s(text + " "),
                _s("+" + text),
                _s("." + text.replace(".", "")),
                _s(text + ".") if "." not in text else _s(text + ".5.5"),
                _s(""),
                _s("0"),
                "0",
                "0.0",
                _s(canonical(value + step / 2)),  # off the step
                _s(canonical(value + step / 1000)),
                _s(canonical(step * 2**63)),  # 2^63 steps
                canonical(step * (2**63 + 1)),
                "true",
                "false",
                "[" + _s(text) + "]",
                '{"v":' + _s(text) + "}",
                _s("abc"),
                _s("１"),
            ]
        )

    def _price(self, m: MarketSpec) -> str:
        tick = Fraction(m.tick)
        n = m.mid + self.r.randint(-self.spread, self.spread)
        if self.r.random() < self.bad_field_rate:
            return self._bad_decimal(n * tick, tick)
        if self.r.random() < 0.01:
            return _s(canonical((2**63 - 1) * tick))  # the largest valid price
        return self._decimal(n * tick)

    def _qty(self, m: MarketSpec) -> str:
        lot = Fraction(m.lot)
        n = self.r.randint(1, self.max_lots)
        if self.r.random() < self.bad_field_rate:
            return self._bad_decimal(n * lot, lot)
        if self.r.random() < 0.005:
            return _s(canonical((2**63 - 1) * lot))
        return self._decimal(n * lot)

    def _name(self, valid: str) -> str:
        """``valid`` as a JSON string, or (at the bad-field rate) something that is not a name."""
        r = self.r
        if r.random() >= self.bad_field_rate / 2:
            return _s(valid)
        return r.choice(
            [
                _s(""),
                _s("x" * 65),
                _s(valid + "\n"),
                _s(valid + " "),
                _s("é" + valid),
                json.dumps("ü" + valid, ensure_ascii=False),
                "7",
                "1.5",
                "null",
                "true",
                "[" + _s(valid) + "]",
                _s(valid + "/"),
            ]
        )

    def _random_json(self) -> str:
        return self.r.choice(
            [
                "null",
                "true",
                "false",
                "0",
                "-1",
                "1.5",
                "1e3",
                _s(""),
                _s("x"),
                _s("buy"),
                _s("GTC"),
                "[]",
                "{}",
                '[{"a":1}]',
                _s("cancel_both"),
            ]
        )

    # ------------------------------------------------------------------ commands

    def _obj(self, fields: list[tuple[str, str]]) -> str:
        """A JSON object from ``(key, fragment)`` pairs, maybe damaged at the bad-field rate."""
        r = self.r
        out: list[tuple[str, str]] = []
        for key, frag in fields:
            k = r.random()
            if key != "type" and k < self.bad_field_rate / 3:
                continue  # field missing
            if key != "type" and k < self.bad_field_rate * 2 / 3:
                out.append((key, "null"))
            elif key != "type" and k < self.bad_field_rate:
                out.append((key, self._random_json()))
            else:
                out.append((key, frag))
        if r.random() < 0.05:
            out.append((r.choice(["req", "note", "x", "seq", "ts"]), self._random_json()))
        r.shuffle(out)
        return "{" + ",".join(f"{_s(k)}:{v}" for k, v in out) + "}"

    def setup(self) -> list[str]:
        """The ``add_market`` lines that open this seed's markets."""
        return [
            self._obj_plain(
                [
                    ("type", _s("add_market")),
                    ("market", _s(m.name)),
                    ("tick", _s(m.tick)),
                    ("lot", _s(m.lot)),
                ]
            )
            for m in self.markets
        ]

    @staticmethod
    def _obj_plain(fields: list[tuple[str, str]]) -> str:
        return "{" + ",".join(f"{_s(k)}:{v}" for k, v in fields) + "}"

    def _target(self) -> tuple[str, str, str]:
        """An order to cancel or amend: mostly live, sometimes dead or unknown."""
        r = self.r
        if self.live and r.random() < 0.75:
            client, oid = r.choice(sorted(self.live))
            return client, oid, self.live[client, oid][0]
        if self.history and r.random() < 0.9:
            if r.random() < 0.7:
                return self.history[-r.randint(1, min(len(self.history), 12))]
            return r.choice(self.history)
        return (r.choice(self.clients), f"o{r.randint(0, self.next_id + 5)}", "A")

    def place(self) -> str:
        r = self.r
        m = r.choice(self.markets)
        client = r.choice(self.clients)
        if self.history and r.random() < 0.04:
            client, oid, _ = r.choice(self.history)  # a duplicate id
        else:
            oid = f"o{self.next_id}"
            self.next_id += 1
            self.history.append((client, oid, m.name))
        side = r.choice(["buy", "sell"])
        fields = [
            ("type", _s("place")),
            ("client", self._name(client)),
            ("id", self._name(oid)),
            ("market", self._name(m.name) if r.random() > 0.01 else _s("NOPE")),
            ("side", _s(side) if r.random() > self.bad_field_rate else _s("BUY")),
            ("qty", self._qty(m)),
        ]
        market_order = r.random() < 0.15
        if not market_order:
            fields.append(("price", self._price(m)))
        elif r.random() < 0.3:
            fields.append(("price", "null"))
        k = r.random()
        if k < 0.35:
            pass  # default tif
        elif k < 0.35 + self.bad_field_rate:
            fields.append(("tif", r.choice([_s("gtc"), _s("DAY"), "1", "null"])))
        else:
            fields.append(("tif", _s(r.choice(_TIFS))))
        k = r.random()
        if k < 0.15:
            fields.append(("post_only", "true"))
        elif k < 0.25:
            fields.append(("post_only", "false"))
        elif k < 0.25 + self.bad_field_rate / 2:
            fields.append(("post_only", r.choice([_s("true"), "1", "0", "null"])))
        k = r.random()
        if k < 0.5:
            pass
        elif k < 0.5 + self.bad_field_rate / 2:
            fields.append(("stp", r.choice([_s("none"), _s("CANCEL_BOTH"), "2", "null"])))
        else:
            fields.append(("stp", _s(r.choice(_STPS))))
        return self._obj(fields)

    def cancel(self) -> str:
        client, oid, _ = self._target()
        return self._obj(
            [("type", _s("cancel")), ("client", self._name(client)), ("id", self._name(oid))]
        )

    def amend(self) -> str:
        r = self.r
        client, oid, market = self._target()
        # (a damaged field may have opened and used a market of another name, such as "x")
        m = self.by_name.get(market, MARKETS[0])
        fields = [("type", _s("amend")), ("client", self._name(client)), ("id", self._name(oid))]
        qty, price = self._qty(m), self._price(m)
        if (client, oid) in self.live and r.random() < 0.6:
            # relative to the live order: same price written anew, less/equal/more quantity
            _, now_price, left = self.live[client, oid]
            lot = Fraction(m.lot)
            if r.random() < 0.6:
                price = self._decimal(now_price)
            k = r.random()
            if k < 0.4 and left > lot:
                qty = self._decimal(lot * r.randint(1, int(left / lot) - 1))
            elif k < 0.6:
                qty = self._decimal(left)
            else:
                qty = self._decimal(left + lot * r.randint(1, 3))
        k = r.random()
        if k < 0.35:
            fields.append(("qty", qty))
        elif k < 0.6:
            fields.append(("price", price))
        elif k < 0.95:
            fields.append(("qty", qty))
            fields.append(("price", price))
        elif k < 0.975:
            fields.append(("qty", "null"))
        return self._obj(fields)

    def add_market(self) -> str:
        r = self.r
        k = r.random()
        if k < 0.4:
            m = r.choice(MARKETS)  # often already open: market_exists
            if m not in self.markets:
                self.markets.append(m)
            return self._obj_plain(
                [
                    ("type", _s("add_market")),
                    ("market", _s(m.name)),
                    ("tick", self._decimal(Fraction(m.tick))),
                    ("lot", self._decimal(Fraction(m.lot))),
                ]
            )
        name = f"X{self.extra_markets}"
        self.extra_markets += 1
        return self._obj(
            [
                ("type", _s("add_market")),
                ("market", self._name(name)),
                ("tick", r.choice([_s("0.1"), "0.25", _s("0"), _s("-1"), "1e1", _s("5")])),
                ("lot", r.choice([_s("1"), "0.001", _s("0.0"), "true", _s("3")])),
            ]
        )

    def garbage(self) -> str | bytes:
        r = self.r
        k = r.randrange(10)
        if k == 0:
            return r.randbytes(r.randint(0, 40))
        if k == 1:
            line = self.place()
            return line[: r.randint(0, len(line) - 1)]  # truncated
        if k == 2:
            return self.place().encode().replace(b'"c', b'"\xffc', 1)  # invalid UTF-8
        if k == 3:
            return r.choice(["NaN", "Infinity", "[1,2]", '"place"', "1", "null", "true", "-0.0"])
        if k == 4:
            return r.choice(['{"type":"trade"}', "{}", '{"type":null}', '{"type":7}'])
        if k == 5:
            return '{"type":"place"}'
        if k == 6:
            return self.place().replace('"place"', '"Place"')
        if k == 7:
            return "[" + self.place() + "]"
        if k == 8:
            return self.place().replace("}", ',"qty":NaN}', 1)
        return r.choice([" ", "\t", "", "\r"])

    def next(self) -> str | bytes:
        """One more line."""
        r = self.r
        k = r.random()
        if k < self.garbage_rate:
            return self.garbage()
        k = r.random()
        if k < 0.66:
            return self.place()
        if k < 0.66 + self.cancel_share:
            return self.cancel()
        if k < 0.98:
            return self.amend()
        return self.add_market()

    def lines(self, n: int) -> list[str | bytes]:
        """The setup lines, then ``n`` more, observed through a private reference engine."""
        from grenex.codec import decode_command

        ref = ReferenceEngine()
        out: list[str | bytes] = list(self.setup())
        for i, line in enumerate(out):
            ref.apply(decode_command(line), i + 1)
        for _ in range(n):
            line = self.next()
            out.append(line)
            self.observe(ref.apply(decode_command(line), len(out)))
        return out

#!/usr/bin/env python3
"""An outsider's audit check: recomputes every record hash of an organization's chain
from the API's output alone, following docs/audit.md and nothing else (no code of the
server's, standard library only).

    audit_recompute.py BASE_URL ACCESS_TOKEN

Pages through GET /api/v1/audit, parses each page with Python's json module (as any
client would), re-encodes each record's `details` with the canonical encoding of
docs/audit.md, recomputes the record hash and checks the chain links from the genesis
hash on. Prints the number of records checked; exits 1 naming the first record that
does not re-hash, 2 on a usage or transport problem.
"""

import decimal
import hashlib
import json
import struct
import sys
import urllib.request

GENESIS_DOMAIN = b"agentid-audit-genesis\x00"
RECORD_DOMAIN = b"agentid-audit-v1"


def field(data: bytes) -> bytes:
    return struct.pack(">Q", len(data)) + data


def optional(value) -> bytes:
    if value is None:
        return b"\x00" + field(b"")
    return b"\x01" + field(value.encode("utf-8"))


def number(value) -> str:
    """A JSON number as docs/audit.md, "Numbers", writes it."""
    if isinstance(value, bool):
        raise TypeError("booleans are not numbers")
    if isinstance(value, int):
        return str(value)
    if value == 0.0:
        return "-0.0" if str(value).startswith("-") else "0.0"
    sign = "-" if value < 0 else ""
    # The shortest decimal digits that read back as this double (Python's repr gives
    # them), as an integer d of n digits and an exponent k: |value| = d * 10**k.
    _, digits, exponent = decimal.Decimal(repr(abs(value))).normalize().as_tuple()
    d = "".join(map(str, digits))
    n = len(d)
    k = exponent
    kk = n + k  # 10**(kk-1) <= |value| < 10**kk
    if 0 <= k and kk <= 16:
        text = d + "0" * k + ".0"
    elif 0 < kk <= 16:
        text = d[:kk] + "." + d[kk:]
    elif -5 < kk <= 0:
        text = "0." + "0" * (-kk) + d
    else:
        e = kk - 1
        exponent = ("+" if e >= 0 else "") + str(e)
        text = d + "e" + exponent if n == 1 else d[0] + "." + d[1:] + "e" + exponent
    return sign + text


ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def string(value: str) -> str:
    out = []
    for ch in value:
        if ch in ESCAPES:
            out.append(ESCAPES[ch])
        elif ord(ch) < 0x20:
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def canonical(value) -> str:
    """The canonical JSON text of docs/audit.md, "The details encoding"."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return number(value)
    if isinstance(value, str):
        return string(value)
    if isinstance(value, list):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    if isinstance(value, dict):
        # Keys in ascending order of their UTF-8 bytes.
        keys = sorted(value, key=lambda k: k.encode("utf-8"))
        return "{" + ",".join(string(k) + ":" + canonical(value[k]) for k in keys) + "}"
    raise TypeError("not JSON: %r" % (value,))


def record_hash(r) -> str:
    encoding = b"".join(
        [
            field(RECORD_DOMAIN),
            field(r["org_id"].encode("utf-8")),
            field(str(r["seq"]).encode("ascii")),
            field(str(r["occurred_at_ms"]).encode("ascii")),
            field(r["actor_type"].encode("utf-8")),
            optional(r["actor_id"]),
            field(r["action"].encode("utf-8")),
            optional(r["target_type"]),
            optional(r["target_id"]),
            field(r["outcome"].encode("utf-8")),
            field(canonical(r["details"]).encode("utf-8")),
            optional(r["request_id"]),
            field(r["prev_hash"].encode("ascii")),
        ]
    )
    return hashlib.sha256(encoding).hexdigest()


def get(base: str, token: str, path: str):
    request = urllib.request.Request(base + path, headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


# The examples of docs/audit.md, "Floats", checked before anything is fetched.
FLOAT_EXAMPLES = [
    (0.0, "0.0"), (-0.0, "-0.0"), (50.0, "50.0"), (1.0, "1.0"), (1234000.0, "1234000.0"),
    (62.26959139023637, "62.26959139023637"), (12.5, "12.5"), (0.5, "0.5"),
    (0.00001, "0.00001"), (0.30000000000000004, "0.30000000000000004"), (0.000001, "1e-6"),
    (1e16, "1e+16"), (5e-324, "5e-324"), (1.5e-7, "1.5e-7"), (1.2345e20, "1.2345e+20"),
    (909635926832163.25, "909635926832163.2"),
]


def main() -> int:
    for value, text in FLOAT_EXAMPLES:
        if number(value) != text:
            print("the float rule writes %r as %s, docs/audit.md says %s" % (value, number(value), text))
            return 1
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    base, token = sys.argv[1].rstrip("/"), sys.argv[2]
    checked = 0
    after = 0
    expected_prev = None
    while True:
        page = get(base, token, "/api/v1/audit?after=%d&limit=500" % after)
        records = page["records"]
        if not records:
            break
        for r in records:
            if expected_prev is None:
                genesis = hashlib.sha256(GENESIS_DOMAIN + r["org_id"].encode("utf-8")).hexdigest()
                expected_prev = genesis if r["seq"] == 1 else r["prev_hash"]
            if r["prev_hash"] != expected_prev:
                print("record %d: prev_hash does not name the record before it" % r["seq"])
                return 1
            computed = record_hash(r)
            if computed != r["hash"]:
                print(
                    "record %d (%s) does not re-hash: computed %s, served %s; details re-encoded as %s"
                    % (r["seq"], r["action"], computed, r["hash"], canonical(r["details"]))
                )
                return 1
            expected_prev = r["hash"]
            checked += 1
        after = records[-1]["seq"]
    head = get(base, token, "/api/v1/audit/verify")
    if head["head_hash"] != expected_prev:
        print("the head does not name the last record")
        return 1
    print(checked)
    return 0


if __name__ == "__main__":
    sys.exit(main())

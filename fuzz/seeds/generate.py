#!/usr/bin/env python3
"""Writes the checked-in seed corpus of each fuzz target from the repository's fixtures.

Run from the repository root: python3 fuzz/seeds/generate.py. Each seed is small (a few KB
per target in all); the fuzzer grows its own corpus in fuzz/corpus/ (not checked in).
"""
import base64
import gzip
import json
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "fuzz", "seeds")
FIXTURE = os.path.join(ROOT, "transforms", "tests", "fixtures", "decoder", "input.ndjson")


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


lines = [l.rstrip(b"\n") for l in open(FIXTURE, "rb")]
envelopes = [json.loads(l) for l in lines]
for e in envelopes:
    e["attributeMap"] = e.get("attributeMap") or {}
    e["payload"] = e.get("payload") or ""
small = [l for l in lines if len(l) < 400]

# envelope: fixture lines (the small ones), a blank line, CRLF, a broken line, a short limit
write("envelope", "fixture-lines", b"\n".join(small[:4]) + b"\n")
write("envelope", "blank-crlf-broken", small[0] + b"\r\n \t\n{\"payload\":\"!!\"}\nnot json\n" + small[1])
write("envelope", "limited", bytes([40, 0xff]) + small[2] + b"\n{}\n")
write("envelope", "null-fields", b'{"attributeMap":null,"payload":null}\n{"attributeMap":{"a":"b"}}\n')


# heka: frames built by hand (protobuf wire format of HekaMessage and Header)
def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(tag, wire, value):
    key = varint((tag << 3) | wire)
    if wire == 0:
        return key + varint(value)
    return key + varint(len(value)) + value


def heka_field(name, string=None, raw=None):
    body = field(1, 2, name.encode())
    if string is not None:
        body += field(4, 2, string.encode())
    if raw is not None:
        body += field(2, 0, 1) + field(5, 2, raw)
    return field(10, 2, body)


def frame(uuid, timestamp, fields, hostname=None):
    msg = field(1, 2, uuid) + field(2, 0, timestamp)
    if hostname:
        msg += field(9, 2, hostname.encode())
    msg += b"".join(fields)
    header = field(1, 0, len(msg))
    return bytes([0x1E, len(header)]) + header + bytes([0x1F]) + msg


frames = []
for i, env in enumerate(envelopes[28:31]):
    payload = base64.b64decode(env["payload"])
    attrs = [heka_field(k, string=v) for k, v in sorted(env["attributeMap"].items())[:3]]
    frames.append(frame(bytes([i + 1] * 16), 1520888538123456000, [heka_field("content", raw=payload)] + attrs, "edge-1"))
write("heka", "three-frames", b"".join(frames))
write("heka", "cut-then-good", frames[0][:-3] + frames[1])
write("heka", "garbage-between", frames[0] + b"\x1e\x1e\x00garbage" + frames[2])
write("heka", "no-content", frame(bytes([7] * 16), 0, [heka_field("uri", string="/x")]))

# parse_uri: the fixture's uris, good and bad
uris = sorted({e["attributeMap"].get("uri", "") for e in envelopes})
picked = [u for u in uris if u][:: max(1, len(uris) // 12)]
for i, uri in enumerate(picked):
    write("parse_uri", f"fixture-{i:02}", uri.encode())
write("parse_uri", "query", bytes([1, 0xff]) + b"/submit/test/test/1/344ec112-4dd8-4a3e-84ec-55c42aea146a")

# decompress: a cap header, then gzip payloads from the fixture (some over the cap)
gz = [base64.b64decode(e["payload"]) for e in envelopes if base64.b64decode(e["payload"])[:2] == b"\x1f\x8b"]
write("decompress", "fixture-gzip", struct.pack("<H", 4096) + gz[0])
write("decompress", "over-cap", struct.pack("<H", 100) + gz[1])
write("decompress", "truncated", struct.pack("<H", 60000) + gz[2][: len(gz[2]) // 2])
write("decompress", "two-members", struct.pack("<H", 60000) + gzip.compress(b'{"a":1}') + gzip.compress(b'{"b":2}'))
write("decompress", "bomb", struct.pack("<H", 1000) + gzip.compress(b" " * 200000))
write("decompress", "plain", struct.pack("<H", 10) + b'{"not":"gzip"}')

# parse_payload: a route header (route index, depth limit), then a payload
plain = []
for e in envelopes:
    p = base64.b64decode(e["payload"])
    if p[:2] == b"\x1f\x8b":
        try:
            p = gzip.decompress(p)
        except Exception:  # the fixture's corrupt gzip cases
            continue
    plain.append((e["attributeMap"].get("uri", ""), p))
for route, prefix in [(0, "/submit/test/"), (3, "/submit/org-mozilla-fenix/"), (2, "/submit/telemetry/x/event")]:
    for uri, p in plain:
        if uri.startswith(prefix.split("/x/")[0]) and len(p) < 1500:
            write("parse_payload", f"route{route}", bytes([route, 64, 0xff]) + p)
            break
write("parse_payload", "deep", bytes([0, 10, 0xff]) + b'{"a":' * 12 + b"1" + b"}" * 12)
write("parse_payload", "metadata", bytes([0, 64, 0xff]) + b'{"metadata":{"document_namespace":"other","header":{"x":"y"}},"a":1}')
write("parse_payload", "telemetry-version", bytes([1, 64, 0xff]) + b'{"version":4,"clientId":"c0ffeec0-ffee-c0ff-eec0-ffeec0ffeec0"}')

# path_template: the default layout and the fixture's attributes
layout = "${document_namespace:-ns}/${document_type:-dt}/v${document_version:-0}/${submission_date:-unknown}/"
attrs = envelopes[0]["attributeMap"]
kv = "\0".join(f"{k}={v}" for k, v in sorted(attrs.items()))
write("path_template", "layout", (layout + "\0" + kv + "\0document_namespace=telemetry\0document_type=main").encode())
write("path_template", "hostile-values", (layout + "\0document_namespace=..\0document_type=a/b\\c\0document_version=" + "9" * 300).encode())
write("path_template", "raw-prefix", b"/raw/v1/${x}/${y:-}/prefix-\0x=.\0y=")
write("path_template", "broken", b"a/${x\0x=1")

"""selftest.py SLUICE BASELINE: checks that decoder.py does the Rust decoder's work on inputs
the benchmark's workload rarely or never has, by decoding the same file with
`sluice-baseline decode` and with decoder.py (one process, no runner) and comparing the outputs
with compare.py. Run with the bench's venv (jsonschema_rs), from anywhere:

    target/bench/pyenv/bin/python scripts/bench_python/selftest.py target/release/sluice \\
        target/release/sluice-baseline

The input: a generated telemetry workload with 20% broken records, its decoded output and
dead letters fed back in (replays: metadata lifted, error attributes stripped), and crafted
envelopes (proxy timestamps, multi-member, truncated and trailing-garbage gzip, user agents,
NaN, non-object and invalid UTF-8 payloads, a non-canonical client id, a version that is not
canonical, case in names, a bad document_id attribute, 70-deep nesting, blank and broken
lines, normalized fields). Exits 1 when the outputs differ.
"""

import base64
import glob
import gzip
import io
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import compare  # noqa: E402
import decoder  # noqa: E402

SCHEMAS = os.path.join(HERE, "..", "..", "schemas", "json")
URI = "/submit/test/test/1/8ad6b9a0-2f58-4a3e-b54f-3b2d3b0f6c11"
DOC = b'{"field":"x","count":3}'


def envelope(attrs, payload):
    return json.dumps({"attributeMap": attrs, "payload": base64.b64encode(payload).decode()})


def gz(data):
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb") as g:
        g.write(data)
    return out.getvalue()


def crafted():
    safari = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
              "Version/17.0 Mobile/15E148 Safari/604.1")
    opera = ("Opera/9.80 (Android; Opera Mini/7.5.33361/31.1448; U; en) Presto/2.8.119 "
             "Version/11.1010")
    trident = "Mozilla/5.0 (Windows NT 6.1; Trident/7.0; rv:11.0) like Gecko"
    deep = b'{"field":"x","deep":' + b"[" * 70 + b"]" * 70 + b"}"
    telemetry = "/submit/telemetry/8ad6b9a0-2f58-4a3e-b54f-3b2d3b0f6c11/main/Firefox/1/beta-cck/2/"
    return [
        envelope({"uri": URI, "x_pipeline_proxy": "2024-01-02T03:04:05Z",
                  "submission_timestamp": "2024-01-01T00:00:00Z",
                  "x_forwarded_for": "1.1.1.1, 2.2.2.2, 3.3.3.3"}, DOC),
        envelope({"uri": URI, "x_pipeline_proxy": "garbage"}, DOC),
        envelope({"uri": URI}, gz(b'{"field":') + gz(b'"y"}')),
        envelope({"uri": URI}, gz(DOC)[:-5]),
        envelope({"uri": URI}, gz(DOC) + b"trailing"),
        envelope({"uri": URI, "user_agent": safari}, DOC),
        envelope({"uri": URI, "user_agent": opera}, DOC),
        envelope({"uri": URI, "user_agent": trident}, DOC),
        envelope({"uri": URI}, b'{"field":NaN}'),
        envelope({"uri": URI}, b"[1,2]"),
        envelope({"uri": URI},
                 b'{"field":"x","client_id":"{8AD6B9A0-2F58-4A3E-B54F-3B2D3B0F6C11}"}'),
        envelope({"uri": "/submit/test/test/01/8ad6b9a0-2f58-4a3e-b54f-3b2d3b0f6c11"}, DOC),
        envelope({"uri": telemetry}, b'{"version": 4}'),
        envelope({"uri": "/submit/Test/Test/1/8ad6b9a0-2f58-4a3e-b54f-3b2d3b0f6c11"}, DOC),
        envelope({"uri": URI, "document_id": "bad"}, DOC),
        envelope({"uri": URI, "error_type": "X", "input_line": "4"}, DOC),
        envelope({"uri": URI}, deep),
        envelope({"uri": URI}, b"\xff\xfe"),
        envelope({}, DOC),
        '{"attributeMap":null}',
        "   ",
        '{"attributeMap":{"uri":"' + URI + '"},"payload":"eyJmaWVsZCI6Ingi fQ=="}',
        envelope({"uri": URI, "geo_country": "fr", "app_name": "Focus-TV"},
                 b'{"field":"x","os":"Darwin","osversion":"10.1.2.3"}'),
    ]


def decode_with_python(path, out):
    job = decoder.Decoder(SCHEMAS, path)
    outputs = decoder.Outputs(out, "selftest.ndjson.gz")
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            for folder, record in job.decode(line, number):
                outputs.write(folder, record)
    outputs.close()


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: selftest.py SLUICE BASELINE")
    sluice, baseline = sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        generated = os.path.join(tmp, "generated.ndjson")
        subprocess.run([sluice, "generate", "--count", "2000", "--seed", "7", "--error-rate",
                        "0.2", "--workload", "telemetry", "--output", generated], check=True)
        first = os.path.join(tmp, "first")
        subprocess.run([baseline, "decode", "--input", generated, "--out", first, "--schemas",
                        SCHEMAS], check=True)
        lines = open(generated).read().splitlines()
        for f in sorted(glob.glob(os.path.join(first, "**", "*.gz"), recursive=True)):
            lines += gzip.open(f).read().decode().splitlines()
        lines += crafted()
        path = os.path.join(tmp, "input.ndjson")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        ref, out = os.path.join(tmp, "ref"), os.path.join(tmp, "out")
        subprocess.run([baseline, "decode", "--input", path, "--out", ref, "--schemas",
                        SCHEMAS], check=True)
        decode_with_python(path, out)
        sys.argv = ["compare.py", ref, out]
        return compare.main()


if __name__ == "__main__":
    sys.exit(main())

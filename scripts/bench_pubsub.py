#!/usr/bin/env python3
"""Throughput of the decoder job Pub/Sub -> files on the emulator (release build).

    scripts/services/pubsub.sh start
    cargo build --release -p sluice-pipelines --bin sluice
    python3 scripts/bench_pubsub.py [--count 20000] [--runs 3] [--workers 1,2]

For each worker count and run: a new topic and subscription (ack deadline 600 s: cloudbox
ignores flow control and pushes everything at once, and with its default 10 s deadline what
waits in the stream's buffers would expire and be delivered twice, which real Pub/Sub's flow
control prevents), `--count` submissions from `sluice generate` published to it (not timed),
then `sluice run` of the decoder from the subscription to files, timed from start until the
job ends, less its `exit_when_idle` (3 s; with less, a worker that waits longer than that for
the loaded emulator ends early). Prints each run and the median per worker count:
messages/s (messages published / time) and MB/s (payload bytes published / time), with the
load average before and after, and marks a run whose `records read` is not `--count` (every
message written or dead-lettered once).
"""

import argparse
import base64
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IDLE = 3.0


def call(rest, method, path, body):
    req = urllib.request.Request(rest + "/v1/" + path, method=method,
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read() or b"{}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--grpc", default="http://127.0.0.1:8085")
    ap.add_argument("--rest", default="http://127.0.0.1:8086")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/sluice"))
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="sluice-bench-pubsub-")
    data = os.path.join(work, "input.ndjson")
    subprocess.run([args.binary, "generate", "--count", str(args.count), "--seed", "1",
                    "--output", data], check=True)
    messages = []
    payload_bytes = 0
    with open(data, "rb") as f:
        for line in f:
            env = json.loads(line)
            messages.append({"data": env.get("payload", ""),
                             "attributes": env.get("attributeMap") or {}})
            payload_bytes += len(base64.b64decode(env.get("payload", "")))
    print(f"{args.count} submissions, {payload_bytes / 1e6:.1f} MB of payloads; "
          f"binary {args.binary}")

    results = {}
    for workers in [int(w) for w in args.workers.split(",")]:
        for run in range(args.runs):
            name = f"bench-{os.getpid()}-{workers}-{run}"
            topic = f"projects/sluice-test/topics/{name}"
            sub = f"projects/sluice-test/subscriptions/{name}"
            call(args.rest, "PUT", topic, {})
            call(args.rest, "PUT", sub, {"name": sub, "topic": topic,
                                         "ackDeadlineSeconds": 600})
            for i in range(0, len(messages), 500):
                call(args.rest, "POST", topic + ":publish", {"messages": messages[i:i + 500]})
            out = os.path.join(work, name)
            config = os.path.join(work, name + ".toml")
            with open(config, "w") as f:
                f.write(f"""job = "decoder"
workers = {workers}
[source]
type = "pubsub"
subscription = "{sub}"
endpoint = "{args.grpc}"
credentials = "anonymous"
exit_when_idle = "{IDLE}s"
[decoder]
schemas = "{ROOT}/schemas/json"
[sink]
type = "file"
dir = "{out}"
path = "${{document_namespace:-unknown}}/${{document_type:-unknown}}/"
[dead_letter]
type = "file"
dir = "{out}"
path = "errors/${{error_type:-unknown}}/"
""")
            load_before = os.getloadavg()[0]
            start = time.monotonic()
            p = subprocess.run([args.binary, "run", "--no-progress", config],
                               capture_output=True, text=True)
            elapsed = time.monotonic() - start - IDLE
            load_after = os.getloadavg()[0]
            if p.returncode != 0:
                sys.exit(f"run failed: {p.stderr}")
            m = re.search(r"read (\d+) records", p.stderr)
            read = int(m.group(1)) if m else -1
            mark = "" if read == args.count else f"  (read {read}: not {args.count}!)"
            rate = args.count / elapsed
            mbs = payload_bytes / 1e6 / elapsed
            results.setdefault(workers, []).append((rate, mbs))
            print(f"workers={workers} run={run + 1}: {elapsed:.2f}s, {rate:,.0f} msgs/s, "
                  f"{mbs:.1f} MB/s, load {load_before:.1f} -> {load_after:.1f}{mark}",
                  flush=True)
    for workers, rs in results.items():
        rate = statistics.median(r for r, _ in rs)
        mbs = statistics.median(m for _, m in rs)
        print(f"median workers={workers}: {rate:,.0f} msgs/s, {mbs:.1f} MB/s")


if __name__ == "__main__":
    main()

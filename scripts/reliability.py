#!/usr/bin/env python3
"""Sluice's reliability suite (run by scripts/reliability.sh, which builds the release binary and
starts a private S3 server). Parts, each printing its figures:

  crash    file -> S3 decoder run killed with SIGKILL at random points, restarted each time with
           the same state directory; an independent reader (boto3) checks missing = 0, counts
           duplicates (bounded by what each kill exposed), and reads every object whole.
  fault    the S3 endpoint goes away mid-run (a TCP proxy in front of the server stops): the job
           stops without acknowledging what is not durable; after a restart the output is
           complete.
  bad      hostile inputs, each must end as dead letters with peak RSS under 200 MB.
  soak     (opt-in) a long decoder run on stdin with RSS sampled: flat within 10 %.

Environment: SLUICE_BIN, RELIABILITY_S3 (endpoint), RELIABILITY_QUICK=1 (small sizes),
RELIABILITY_PARTS (comma list, default crash,fault,bad), RELIABILITY_SOAK_MINUTES (30),
RELIABILITY_SEED, RELIABILITY_DIR (work directory).
"""

import base64
import gzip
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("SLUICE_BIN", os.path.join(ROOT, "target/release/sluice"))
S3 = os.environ.get("RELIABILITY_S3", "http://127.0.0.1:5093")
QUICK = os.environ.get("RELIABILITY_QUICK") == "1"
WORK = os.environ.get("RELIABILITY_DIR", "/tmp/sluice-reliability")
SEED = int(os.environ.get("RELIABILITY_SEED", str(int(time.time()))))
RSS_LIMIT_KB = 200 * 1000  # 200 MB
CREDS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_REGION": "us-east-1",
}
SCHEMAS = os.path.join(ROOT, "schemas/json")
FAILURES = []


def say(*a):
    print(*a, flush=True)


def fail(msg):
    FAILURES.append(msg)
    say("FAIL:", msg)


def s3():
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=S3,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )


def fresh_bucket(name):
    c = s3()
    try:
        keys = [o["Key"] for o in list_objects(name)]
        for i in range(0, len(keys), 1000):
            c.delete_objects(
                Bucket=name, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]]}
            )
        c.delete_bucket(Bucket=name)
    except c.exceptions.NoSuchBucket:
        pass
    except Exception as e:  # noqa: BLE001 (a bucket that was never made)
        if "NoSuchBucket" not in str(e):
            raise
    c.create_bucket(Bucket=name)


def list_objects(bucket):
    c = s3()
    out = []
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        out.extend(page.get("Contents", []))
    return out


def bucket_lines(bucket):
    """Every line of every object, each object read whole (gunzipped): a partial object fails."""
    c = s3()
    objects = 0
    for o in list_objects(bucket):
        key = o["Key"]
        body = c.get_object(Bucket=bucket, Key=key)["Body"].read()
        if key.endswith(".gz"):
            try:
                body = gzip.decompress(body)
            except Exception as e:  # noqa: BLE001
                fail(f"partial object s3://{bucket}/{key}: {e}")
                continue
        elif "#" in key or ".staging" in key:
            fail(f"a staging object is visible: {key}")
        objects += 1
        text = body.decode("utf-8", "replace")
        if text and not text.endswith("\n"):
            fail(f"object s3://{bucket}/{key} does not end with a newline")
        for line in text.splitlines():
            yield key, line
    say(f"  read {objects} objects of s3://{bucket}")


# ---------------------------------------------------------------- inputs and their keys


def generate(path, count, seed, error_rate):
    """`sluice generate`, then every envelope gets `x_debug_id` = "<file>:<line>" so that an
    independent reader can say which input line an output came from."""
    raw = path + ".raw"
    subprocess.run(
        [BIN, "generate", "--count", str(count), "--seed", str(seed), "--error-rate",
         str(error_rate), "--output", raw],
        check=True,
    )
    name = os.path.basename(path)
    with open(raw, "rb") as f, open(path, "wb") as out:
        for n, line in enumerate(f, 1):
            body = line.rstrip(b"\n")
            try:
                env = json.loads(body)
                if isinstance(env, dict) and isinstance(env.get("attributeMap"), dict):
                    env["attributeMap"]["x_debug_id"] = f"{name}:{n}"
                    body = json.dumps(env, separators=(",", ":")).encode()
            except ValueError:
                pass
            out.write(body + b"\n")
    os.remove(raw)
    return count


def key_of(line):
    """(file, line) of an output or dead-letter line."""
    env = json.loads(line)
    attrs = env.get("attributeMap") or {}
    if "error_type" in attrs and "input_file" in attrs:
        return (os.path.basename(attrs["input_file"]), int(attrs["input_line"]))
    dbg = attrs.get("x_debug_id")
    if dbg is None:
        payload = json.loads(base64.b64decode(env.get("payload") or ""))
        dbg = ((payload.get("metadata") or {}).get("header") or {}).get("x_debug_id")
    if dbg is None:
        raise ValueError(f"cannot tell where this record came from: {line[:300]}")
    f, n = dbg.rsplit(":", 1)
    return (f, int(n))


def seen_in(buckets):
    seen = {}
    for b in buckets:
        for _, line in bucket_lines(b):
            k = key_of(line)
            seen[k] = seen.get(k, 0) + 1
    return seen


# The file source's default split size (`FileSource::split_bytes`): a plain input larger than
# this is read in splits, each checkpointed on its own as `path@start`.
SPLIT_BYTES = 16 << 20
_UNITS = {}


def units_of(path):
    """{start byte: (first line, last line)} of the units the file source reads `path` in:
    the whole file, or its splits (each starts at the first line start at or after a multiple
    of SPLIT_BYTES), worked out independently of the source, from the file's bytes."""
    if path not in _UNITS:
        with open(path, "rb") as fh:
            data = fh.read()
        size = len(data)
        total = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
        points = [0]
        k = 1
        while size > SPLIT_BYTES and k * SPLIT_BYTES < size:
            x = k * SPLIT_BYTES
            nl = data.find(b"\n", x - 1)
            start = nl + 1 if nl != -1 else size
            if start < size and start != points[-1]:
                points.append(start)
            k += 1
        table = {}
        for i, start in enumerate(points):
            last = data.count(b"\n", 0, points[i + 1]) if i + 1 < len(points) else total
            table[start] = (data.count(b"\n", 0, start) + 1, last)
        _UNITS[path] = table
    return _UNITS[path]


def acknowledged(state):
    """Line ranges acknowledged per input file name: {name: [(first, last), ...]}, one range
    per checkpoint (a whole file's, or a split's)."""
    acked = {}
    if not os.path.isdir(state):
        return acked
    for f in os.listdir(state):
        if not f.endswith(".checkpoint.json"):
            continue
        with open(os.path.join(state, f)) as fh:
            v = json.load(fh)
        path, start = v["path"], 0
        m = re.fullmatch(r"(.*)@(\d+)", path)
        if m and not os.path.exists(path):
            path, start = m.group(1), int(m.group(2))
        first, last = units_of(path)[start]
        acked.setdefault(os.path.basename(path), []).append(
            (first, last if v["complete"] else v["lines"]))
    return acked


def is_acked(acked, name, line):
    return any(first <= line <= last for first, last in acked.get(name, ()))


def acked_count(acked):
    return sum(max(0, last - first + 1) for ranges in acked.values() for first, last in ranges)


# ---------------------------------------------------------------- the decoder job on S3


def s3_job(inputs, state, out_bucket, dead_bucket, endpoint, epoch, epochs, workers=2):
    return [
        BIN, "run", os.path.join(ROOT, "examples/configs/decoder-s3.toml"),
        "--no-progress", "--workers", str(workers),
        "--set", f"source.path={inputs}/*.ndjson",
        "--set", f"source.state_dir={state}",
        "--set", f"decoder.schemas={SCHEMAS}",
        "--set", f"sink.bucket={out_bucket}",
        "--set", f"sink.endpoint={endpoint}",
        "--set", "sink.allow_http=true",
        "--set", f"dead_letter.bucket={dead_bucket}",
        "--set", f"dead_letter.endpoint={endpoint}",
        "--set", "dead_letter.allow_http=true",
        "--set", f"pipeline.epoch.max_records={epoch}",
        "--set", f"pipeline.in_flight.max_epochs={epochs}",
        # Streamed objects close by their own bounds, not by epochs in flight: with the
        # config's 100 MB / 60 s a run of seconds would acknowledge everything at its end, and
        # no kill or fault would land between acknowledgements.
        "--set", "sink.batch.max_age=250ms",
        "--set", "dead_letter.batch.max_age=250ms",
        "--set", "pipeline.stack_traces=false",
    ]


def spawn(cmd, log):
    env = dict(os.environ, **CREDS)
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def crash():
    say("\n== crash-restart: file -> S3 decoder, SIGKILL at random points")
    rng = random.Random(SEED)
    total = 20_000 if QUICK else 100_000
    kills = 4 if QUICK else 12
    files = 4
    workers, epoch, epochs = 2, 1000, 4
    bound = workers * epoch * epochs
    d = os.path.join(WORK, "crash")
    shutil.rmtree(d, ignore_errors=True)
    inputs, state = os.path.join(d, "in"), os.path.join(d, "state")
    os.makedirs(inputs)
    expected = set()
    for i in range(files):
        name = f"part{i}.ndjson"
        n = generate(os.path.join(inputs, name), total // files, SEED + i, 0.05)
        expected.update((name, line) for line in range(1, n + 1))
    out, dead = "rel-crash-out", "rel-crash-dead"
    fresh_bucket(out)
    fresh_bucket(dead)
    cmd = s3_job(inputs, state, out, dead, S3, epoch, epochs, workers)
    say(f"  {len(expected)} input lines in {files} files, seed {SEED}, {kills} kills, "
        f"in-flight bound {bound} records ({epochs} epochs x {epoch} records x {workers} workers)")
    log = open(os.path.join(d, "runs.log"), "ab")

    def acked_total():
        return acked_count(acknowledged(state))

    exposures, points = [], []
    for k in range(1, kills + 1):
        start = acked_total()
        left = len(expected) - start
        # a random point: once a random share of what is left of this kill's slice is
        # acknowledged, then 0 to 50 ms later
        target = start + int(left / (kills + 2 - k) * rng.uniform(0.2, 1.0))
        jitter = rng.uniform(0, 0.05)
        child = spawn(cmd, log)
        deadline = time.time() + 300
        while acked_total() < target and child.poll() is None:
            if time.time() > deadline:
                fail(f"kill {k}: no progress for 300 s")
                break
            time.sleep(0.002)
        time.sleep(jitter)
        running = child.poll() is None
        child.send_signal(signal.SIGKILL)
        child.wait()
        if not running:
            fail(f"kill {k}: the run ended before it was killed (rc {child.returncode})")
        acked = acknowledged(state)
        seen = seen_in([out, dead])
        exposed = sum(1 for (f, n) in seen if not is_acked(acked, f, n))
        exposures.append(exposed)
        points.append(acked_total())
        say(f"  kill {k}: at {points[-1]} acknowledged lines (+{jitter * 1000:.0f} ms); "
            f"{len(seen)} records written, {exposed} written but not acknowledged")
        if exposed > bound:
            fail(f"kill {k} exposed {exposed} records to a re-read, over the bound {bound}")
    rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                        env=dict(os.environ, **CREDS), cwd=ROOT).returncode
    if rc != 0:
        fail(f"the last run exited {rc}")
    seen = seen_in([out, dead])
    missing = expected - set(seen)
    extra = set(seen) - expected
    duplicates = sum(n - 1 for n in seen.values())
    if missing:
        fail(f"{len(missing)} records missing, e.g. {sorted(missing)[:3]}")
    if extra:
        fail(f"{len(extra)} records not in the input, e.g. {sorted(extra)[:3]}")
    if duplicates > sum(exposures):
        fail(f"{duplicates} duplicates, more than the {sum(exposures)} the kills exposed")
    if acked_count(acknowledged(state)) != len(expected):
        fail(f"not every input acknowledged whole: {acknowledged(state)}")
    say(f"  RESULT crash: {len(expected)} records, {kills} kills at acknowledged lines {points}; "
        f"missing {len(missing)}, duplicates {duplicates} (per kill exposed {exposures}, "
        f"bound {bound} per kill)")
    return {"kills": kills, "points": points, "missing": len(missing),
            "duplicates": duplicates, "exposed": exposures}


# ---------------------------------------------------------------- sink faults


class Proxy:
    """A TCP proxy to the S3 server that can be switched off: connections refused and open
    ones reset, like a server that went away; switched on again, it forwards again."""

    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.listener = None
        self.conns = []
        self.lock = threading.Lock()

    def start(self):
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self.listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def stop(self):
        ls, self.listener = self.listener, None
        if ls:
            # shutdown wakes the thread blocked in accept(): a close alone leaves the socket
            # listening until that call returns, and the port cannot be bound again
            try:
                ls.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            ls.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    c.close()
                except OSError:
                    pass
            self.conns = []

    def _accept(self, ls):
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(self.target)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def fault():
    say("\n== sink fault: the S3 endpoint goes away mid-run, then comes back")
    total = 10_000 if QUICK else 40_000
    d = os.path.join(WORK, "fault")
    shutil.rmtree(d, ignore_errors=True)
    inputs, state = os.path.join(d, "in"), os.path.join(d, "state")
    os.makedirs(inputs)
    expected = set()
    for i in range(2):
        name = f"part{i}.ndjson"
        n = generate(os.path.join(inputs, name), total // 2, SEED + 100 + i, 0.05)
        expected.update((name, line) for line in range(1, n + 1))
    out, dead = "rel-fault-out", "rel-fault-dead"
    fresh_bucket(out)
    fresh_bucket(dead)
    port = int(S3.rsplit(":", 1)[1])
    proxy = Proxy(port)
    proxy.start()
    cmd = s3_job(inputs, state, out, dead, f"http://127.0.0.1:{proxy.port}", 500, 4)
    log = open(os.path.join(d, "runs.log"), "ab")
    child = spawn(cmd, log)
    target = len(expected) // 4
    deadline = time.time() + 300
    while acked_count(acknowledged(state)) < target:
        if child.poll() is not None or time.time() > deadline:
            fail("the fault run ended or stalled before the fault")
            break
        time.sleep(0.005)
    proxy.stop()
    t0 = time.time()
    acked_at_fault = acknowledged(state)
    try:
        rc = child.wait(timeout=400)
    except subprocess.TimeoutExpired:
        child.kill()
        rc = None
        fail("the job did not stop within 400 s of the endpoint going away")
    stopped_after = time.time() - t0
    acked = acknowledged(state)
    if rc == 0:
        fail("the job exited 0 although its sink was gone")
    # Whatever it acknowledged must be durable: read it back through the proxy's target.
    seen = seen_in([out, dead])
    not_durable = [(f, n) for (f, n) in expected if is_acked(acked, f, n) and (f, n) not in seen]
    if not_durable:
        fail(f"{len(not_durable)} acknowledged records are not in the store, e.g. {not_durable[:3]}")
    acked_lines = acked_count(acked)
    say(f"  endpoint stopped at {acked_count(acked_at_fault)} "
        f"acknowledged lines; the job exited {rc} after {stopped_after:.1f} s with "
        f"{acked_lines} acknowledged, all of them in the store")
    proxy.start()
    rc2 = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                         env=dict(os.environ, **CREDS), cwd=ROOT).returncode
    proxy.stop()
    if rc2 != 0:
        fail(f"the restart exited {rc2}")
    seen = seen_in([out, dead])
    missing = expected - set(seen)
    duplicates = sum(n - 1 for n in seen.values())
    if missing:
        fail(f"{len(missing)} records missing after the restart, e.g. {sorted(missing)[:3]}")
    say(f"  RESULT fault: exit {rc} after {stopped_after:.1f} s without the sink, "
        f"{acked_lines} of {len(expected)} acknowledged (all durable); restart exit {rc2}: "
        f"missing {len(missing)}, duplicates {duplicates}")
    return {"rc": rc, "restart_rc": rc2, "missing": len(missing), "duplicates": duplicates}


# ---------------------------------------------------------------- bad inputs

UUID = "8ad6b9a0-2f58-4a3e-b54f-3b2d3b0f6c11"


def envelope(payload_b64, attrs=None):
    a = {"uri": f"/submit/test/test/1/{UUID}",
         "submission_timestamp": "2026-11-20T10:00:00.000000Z"}
    a.update(attrs or {})
    return json.dumps({"attributeMap": a, "payload": payload_b64}, separators=(",", ":")).encode()


def b64(data):
    return base64.b64encode(data).decode()


def gzip_stream(chunks, level=9):
    z = zlib.compressobj(level, zlib.DEFLATED, 31)
    out = io.BytesIO()
    for c in chunks:
        out.write(z.compress(c))
    out.write(z.flush())
    return out.getvalue()


def write_bad_inputs(d, scale):
    """(name, file, format, expected error types): one file per hostile input."""
    os.makedirs(d, exist_ok=True)
    rnd = random.Random(SEED)
    cases = []

    def case(name, ext, data, fmt="json", expect=None):
        p = os.path.join(d, f"{name}.{ext}")
        with open(p, "wb") as f:
            if isinstance(data, (bytes, bytearray)):
                f.write(data)
            else:
                for chunk in data:
                    f.write(chunk)
        cases.append((name, p, fmt, expect))

    mb = 1 << 20
    gb_chunks = lambda n: (b"\0" * mb for _ in range(n))  # noqa: E731
    # A payload that gunzips to 1 GB (the client sent gzip).
    bomb = gzip_stream(gb_chunks(1024 // scale))
    case("gzip-bomb-payload", "ndjson", envelope(b64(bomb)) + b"\n", expect={"LimitPayloadSize"})
    # An input file that gunzips to 1 GB of NUL bytes (no newline).
    case("gzip-bomb-file", "ndjson.gz", gzip_stream(gb_chunks(1024 // scale)), expect={"ReadInput"})
    # A payload nested 100k deep, and an envelope nested 100k deep.
    deep = 100_000
    case("deep-json-payload", "ndjson",
         envelope(b64(b'{"a":' * deep + b"1" + b"}" * deep)) + b"\n", expect={"ParsePayload"})
    case("deep-json-envelope", "ndjson",
         b'{"attributeMap":' + b'{"a":' * deep + b"1" + b"}" * deep + b"}\n", expect={"ReadInput"})
    # A 50 MB payload.
    case("payload-50mb", "ndjson",
         envelope(b64(rnd.randbytes(50 * mb // scale))) + b"\n")
    # A 200 MB line without a newline.
    case("line-200mb", "ndjson", (b"a" * mb for _ in range(200 // scale)), expect={"ReadInput"})
    # Invalid UTF-8 in the envelope, and a payload that is not base64.
    case("invalid-utf8", "ndjson",
         b'{"attributeMap":{"uri":"/submit/test/test/1/' + UUID.encode() + b'","x":"\xff\xfe"},"payload":"e30="}\n'
         + b"\xc3\x28\xa0\xa1 not utf-8\n", expect={"ReadInput"})
    case("invalid-base64", "ndjson", envelope("!!!not base64###") + b"\n", expect={"ReadInput"})
    # 100k attributes.
    case("attributes-100k", "ndjson",
         envelope(b64(b'{"field":"x"}'), {f"a{i}": "v" for i in range(100_000)}) + b"\n",
         expect={"ParseUri"})
    # Binary garbage.
    case("binary-garbage", "ndjson", rnd.randbytes(10 * mb // scale), expect={"ReadInput"})
    # A truncated .gz of good records.
    good = subprocess.run([BIN, "generate", "--count", str(20_000 // scale), "--seed", "5"],
                          check=True, capture_output=True).stdout
    gz = gzip.compress(good)
    case("truncated-gz", "ndjson.gz", gz[: len(gz) // 2], expect={"ReadInput"})
    # Garbage in a Heka stream.
    case("garbage-heka", "heka", rnd.randbytes(10 * mb // scale), fmt="heka", expect={"ReadInput"})
    return cases


def peak_rss_kb(stderr_text):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr_text)
    return int(m.group(1)) if m else None


def local_job(path, fmt, out):
    return [
        "/usr/bin/time", "-v", BIN, "run", os.path.join(ROOT, "examples/configs/decoder-local.toml"),
        "--no-progress",
        "--set", f"source.path={path}",
        "--set", f"source.format={fmt}",
        "--set", f"decoder.schemas={SCHEMAS}",
        "--set", f"sink.dir={out}",
        "--set", f"dead_letter.dir={out}",
        # a fresh state directory: each run reads its whole input
        "--set", f"data_dir={out}.state",
        "--set", "pipeline.stack_traces=false",
    ]


def count_lines(root):
    """(decoded records, dead letters by error_type) under an output directory."""
    decoded, dead = 0, {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.startswith("."):
                continue
            with open(os.path.join(dirpath, f), "rb") as fh:
                data = fh.read()
            if f.endswith(".gz"):
                data = gzip.decompress(data)
            n = data.count(b"\n")
            rel = os.path.relpath(dirpath, root)
            if rel.startswith("errors"):
                et = rel.split(os.sep)[1] if os.sep in rel else "unknown"
                dead[et] = dead.get(et, 0) + n
            else:
                decoded += n
    return decoded, dead


def bad():
    say("\n== bad inputs: each ends as dead letters, peak RSS under 200 MB")
    scale = 8 if QUICK else 1
    d = os.path.join(WORK, "bad")
    shutil.rmtree(d, ignore_errors=True)
    cases = write_bad_inputs(os.path.join(d, "in"), scale)
    results = []
    for name, path, fmt, expect in cases:
        out = os.path.join(d, "out", name)
        t0 = time.time()
        p = subprocess.run(local_job(path, fmt, out), capture_output=True, cwd=ROOT)
        secs = time.time() - t0
        err = p.stderr.decode("utf-8", "replace")
        rss = peak_rss_kb(err)
        decoded, dead = count_lines(out)
        size = os.path.getsize(path)
        ok = True
        if p.returncode != 0:
            ok = False
            fail(f"{name}: exit {p.returncode}: {err[-600:]}")
        if not dead:
            ok = False
            fail(f"{name}: no dead letter (decoded {decoded})")
        if expect and not expect & set(dead):
            ok = False
            fail(f"{name}: dead letters {dead}, expected one of {sorted(expect)}")
        if rss is None or rss > RSS_LIMIT_KB:
            ok = False
            fail(f"{name}: peak RSS {rss} kB, over {RSS_LIMIT_KB} kB")
        results.append((name, size, rss, dead, decoded, secs, ok))
        say(f"  {name:<20} {size / 1e6:9.1f} MB in  peak RSS {rss / 1000 if rss else 0:7.1f} MB  "
            f"dead letters {dead}  decoded {decoded}  {secs:.1f}s  {'ok' if ok else 'FAIL'}")
        shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(os.path.join(d, "in"), ignore_errors=True)
    return results


# ---------------------------------------------------------------- soak


def soak():
    minutes = float(os.environ.get("RELIABILITY_SOAK_MINUTES", "30"))
    say(f"\n== soak: {minutes:g} minutes of the decoder on stdin, RSS sampled")
    d = os.path.join(WORK, "soak")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    sample = os.path.join(d, "sample.ndjson")
    generate(sample, 20_000, SEED, 0.05)
    cfg = os.path.join(d, "job.toml")
    with open(cfg, "w") as f:
        f.write(f"""job = "decoder"
workers = 2
[source]
type = "stdin"
format = "json"
[decoder]
schemas = "{SCHEMAS}"
[sink]
type = "stdout"
format = "json"
[dead_letter]
type = "stderr"
[pipeline]
stack_traces = false
""")
    child = subprocess.Popen([BIN, "run", cfg, "--no-progress"], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    data = open(sample, "rb").read()
    stop = time.time() + minutes * 60
    fed = [0]

    def feed():
        # about 5,000 records/s, so the run is long, not a race to the end of a file
        try:
            while time.time() < stop:
                for i in range(0, len(data), len(data) // 4):
                    child.stdin.write(data[i : i + len(data) // 4])
                    child.stdin.flush()
                    time.sleep(1.0)
                fed[0] += 20_000
            child.stdin.close()
        except BrokenPipeError:
            pass

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    samples = []
    while time.time() < stop and child.poll() is None:
        time.sleep(5)
        try:
            with open(f"/proc/{child.pid}/status") as st:
                for line in st:
                    if line.startswith("VmRSS:"):
                        samples.append((time.time(), int(line.split()[1])))
        except FileNotFoundError:
            break
    t.join()
    rc = child.wait(timeout=120)
    if rc != 0:
        fail(f"soak: exit {rc}")
    # Flat: after a warm-up (the first sixth of the run), the mean RSS of each later sixth is
    # within 10 % of the first one's. Single samples swing with the batches in flight (up to
    # the in-flight bound), so the peak is reported, not judged: a leak shows as a trend.
    n = len(samples)
    if n < 12:
        fail(f"soak: only {n} RSS samples")
        return None
    sixth = n // 6
    windows = [samples[i * sixth : (i + 1) * sixth] for i in range(1, 6)]
    means = [sum(v for _, v in w) / len(w) for w in windows]
    b = means[0]
    growth = max(means) / b - 1
    peak = max(v for _, v in samples[sixth:])
    say(f"  RESULT soak: {fed[0]} records fed in {minutes:g} min, {n} samples; mean RSS per "
        f"sixth after warm-up {[round(m / 1000, 1) for m in means]} MB (most {growth * 100:+.1f} % "
        f"over the first), peak {peak / 1000:.1f} MB")
    if growth > 0.10:
        fail(f"soak: RSS not flat within 10 % (a later window's mean is {growth * 100:+.1f} % over the first)")
    return {"growth": growth, "base_kb": b, "peak_kb": peak}


def main():
    parts = os.environ.get("RELIABILITY_PARTS", "crash,fault,bad").split(",")
    if os.environ.get("RELIABILITY_SOAK") == "1" and "soak" not in parts:
        parts.append("soak")
    os.makedirs(WORK, exist_ok=True)
    say(f"sluice reliability suite: binary {BIN}, S3 {S3}, seed {SEED}, "
        f"{'quick' if QUICK else 'full'}, parts {parts}; load average {os.getloadavg()}")
    started = time.time()
    for part in parts:
        {"crash": crash, "fault": fault, "bad": bad, "soak": soak}[part]()
    say(f"\nsuite done in {time.time() - started:.0f} s; load average {os.getloadavg()}")
    if FAILURES:
        say(f"{len(FAILURES)} failure(s):")
        for f in FAILURES:
            say("  -", f)
        sys.exit(1)
    say("all reliability checks passed")


if __name__ == "__main__":
    main()

"""The decoder job's per-record work in Python, shared by bytewax_job.py and beam_job.py.

This is what `sluice run examples/configs/decoder-local.toml` does to one input line, written
the way a Python team would write it (json, base64, zlib, and jsonschema-rs validators
compiled once per schema), so that scripts/bench.sh can compare Sluice with Bytewax and Beam
on the same work (issue 8). The steps mirror transforms/src/decode/*.rs, in the same order and
with the same dead-letter error types:

  ReadInput          the line is not a {"attributeMap": ..., "payload": "<base64>"} envelope
  (strip the error attributes of replayed dead letters)
  ParseUri           uri -> routing attributes: /submit/<ns>/<doctype>/<version>/<docid> and
                     /submit/telemetry/<docid>/<doctype>/<app>/<version>/<channel>/<build>
  DecompressPayload  gunzip of a gzip payload (every member), bounded by the payload limit
  LimitPayloadSize   decompressed payload over 8 MiB (a gzip bomb stops at limit + 1 bytes)
  (ParseProxy)       x_pipeline_proxy -> submission_timestamp, x_forwarded_for trimmed
  (ParseUserAgent)   user_agent -> user_agent_browser, _version, _os (gcp-ingestion's rules)
  ParsePayload       json parse, metadata lifted, document id check, depth/size limits,
                     schema lookup (attribute or payload version), jsonschema-rs validation,
                     client_id, sample_id, os, os_version, app_update_channel from the payload
  (NormalizeAttributes, client-IP scrub)
  AddMetadata        the attributes nested into the payload's `metadata`

Decoded records are json envelopes (attributes sorted, payload base64 of the json document
with its metadata), partitioned as `ns/doctype/vN/submission_date/`; dead letters keep the
message as the failing step received it, with error_type, error_message, exception_class,
job_name, input, input_type and (when the runner knows it) input_file/input_line, under
`errors/<error_type>/`. Both are written as gzipped ndjson, one file per folder and writer.

Not ported (the generated workload never needs them; noted in compare.py too): the stub
installer URIs (/stub/...; here a ParseUri dead letter), the split of documents whose schema
has a split_config (none of the workload's 9 schemas has one), schema expiration policies
(none has one), geo lookups (the job runs without MaxMind databases) and payload scrub rules
(the job has none). Error messages are not the Rust ones word for word.
"""

import base64
import binascii
import functools
import gzip
import json
import os
import re
import zlib

import jsonschema_rs

MAX_PAYLOAD_BYTES = 8 * 1024 * 1024
MAX_ATTRIBUTES = 1000
MAX_DEPTH = 64
MAX_ARRAY_LEN = 1_000_000
# dead-letter attribute values are cut at this many bytes, as the SDK cuts them
MAX_ATTRIBUTE_BYTES = 1024

REPLAY_STRIPPED_ATTRIBUTES = (
    "error_type", "error_message", "exception_class", "stack_trace", "job_name", "input",
    "input_type", "input_file", "input_line", "input_offset", "kafka_topic", "kafka_partition",
    "kafka_offset", "pubsub_subscription", "pubsub_message_id", "pubsub_publish_time",
    "pubsub_delivery_attempt", "memory_index",
)
CLIENT_IP_ATTRIBUTES = ("remote_addr", "x_forwarded_for")

TELEMETRY_KEYS = ("document_id", "document_type", "app_name", "app_version",
                  "app_update_channel", "app_build_id")
GENERIC_KEYS = ("document_namespace", "document_type", "document_version", "document_id")
ROUTING = ("document_namespace", "document_type", "document_version")
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")

# metadata layout (transforms/src/decode/metadata.rs)
PREFIXED = (("geo", "geo_"), ("isp", "isp_"), ("user_agent", "user_agent_"))
HEADER_ATTRIBUTES = ("date", "dnt", "x_debug_id", "x_foxsec_ip_reputation", "x_lb_tags",
                     "x_pingsender_version", "x_source_tags", "x_telemetry_agent")
URI_ATTRIBUTES = ("uri", "app_name", "app_version", "app_update_channel", "app_build_id")
TOP_LEVEL_STRING_FIELDS = ("submission_timestamp", "document_id", "normalized_app_name",
                           "normalized_channel", "normalized_os", "normalized_os_version",
                           "normalized_country_code")
METADATA_MEMBERS = frozenset(("metadata",) + TOP_LEVEL_STRING_FIELDS + ("sample_id",))

CHANNELS = ("release", "esr", "beta", "aurora", "nightly")
APP_NAMES = ("Zerda_cn", "Zerda", "Focus-TV", "Focus", "Klar", "FirefoxReality_oculusvr",
             "FirefoxReality_googlevr", "FirefoxReality_wavevr", "FirefoxForFireTV",
             "FirefoxConnect", "Fennec", "Scryer", "WebXR", "Lockbox", "Firefox")

# user agent rules (transforms/src/decode/user_agent.rs): (value, pattern, version rule, os);
# the version rule is a separator character, "last/" or a fixed version "=11"
BROWSERS = (
    ("Edge", "Edge", "/", None), ("Chrome", "Chrome", "/", None),
    ("Opera Mini", "Opera Mini", "last/", None), ("Opera Mobi", "Opera Mobi", "last/", None),
    ("Opera", "Opera", "last/", None), ("MSIE", "MSIE", " ", None),
    ("MSIE", "Trident/7.0", "=11", None), ("Safari", "Safari", "last/", None),
    ("FxSync", "Firefox AndroidSync", " ", "Android"),
    ("FxSync", "Firefox-iOS-Sync", "/", "iOS"), ("Firefox", "Firefox", "/", None),
)
OSES = (("iPod", "iPod"), ("iPad", "iPad"), ("iPhone", "iPhone"), ("Android", "Android"),
        ("BlackBerry", "BlackBerry"), ("Linux", "Linux"), ("Macintosh", "Macintosh"),
        ("FirefoxOS", "Mozilla/5.0 (Mobile;"), ("Windows 10", "Windows NT 10.0"),
        ("Windows 8.1", "Windows NT 6.3"), ("Windows 8", "Windows NT 6.2"),
        ("Windows 7", "Windows NT 6.1"), ("Windows Vista", "Windows NT 6.0"),
        ("Windows XP", "Windows NT 5.1"), ("Windows 2000", "Windows NT 5.0"))
# first characters of every pattern: the scan skips other positions quickly
UA_FIRST = frozenset(p[0] for _, p, _, _ in BROWSERS) | frozenset(p[0] for _, p in OSES)
LEADING_DIGITS = re.compile(r"[0-9]+")

PARTITION = (("document_namespace", "unknown"), ("document_type", "unknown"),
             ("document_version", "0"), ("submission_date", "unknown"))
UNSAFE_PATH_CHAR = re.compile(r"[/\\%#?\x00-\x1f\x7f-\x9f]")


class StepError(Exception):
    """A step rejected the message: `error_type` names the step, as the Rust steps do."""

    def __init__(self, error_type, message, kind):
        super().__init__(message)
        self.error_type = error_type
        self.kind = kind


@functools.lru_cache(maxsize=1024)
def snake_case(name):
    """The registry's lookup form of a namespace or doctype (schemas/src/names.rs)."""
    out = []
    pending = False
    for i, c in enumerate(name):
        if not c.isalnum():
            pending = True
            continue
        if c.isupper() and i > 0:
            prev = name[i - 1]
            next_lower = i + 1 < len(name) and name[i + 1].islower()
            if prev.islower() or prev.isnumeric() or (prev.isupper() and next_lower):
                pending = True
        if pending and out:
            out.append("_")
        pending = False
        out.append(c.lower())
    return "".join(out)


class Registry:
    """Schemas from `<dir>/<namespace>/<doctype>/<doctype>.<version>.schema.json`, each
    compiled once into a jsonschema-rs validator (draft from `$schema`, draft 7 without one,
    formats checked, as the Rust registry compiles them)."""

    def __init__(self, root):
        self.schemas = {}
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in sorted(filenames):
                m = re.fullmatch(r"(.+)\.(\d+)\.schema\.json", name)
                rel = os.path.relpath(os.path.join(dirpath, name), root).split(os.sep)
                if not m or len(rel) != 3 or rel[1] != m.group(1):
                    continue
                namespace, doctype, version = rel[0], rel[1], int(m.group(2))
                with open(os.path.join(dirpath, name), "rb") as f:
                    schema = json.load(f)
                if "$schema" in schema:
                    cls = jsonschema_rs.validator_cls_for(schema)
                else:
                    cls = jsonschema_rs.Draft7Validator
                validator = cls(schema, validate_formats=True)
                key = (snake_case(namespace), snake_case(doctype))
                self.schemas.setdefault(key, {})[version] = (namespace, doctype, version,
                                                             validator, schema)
        if not self.schemas:
            raise ValueError(f"no schemas found under `{root}`")


def is_uuid(s):
    return len(s) == 36 and UUID.fullmatch(s) is not None


def normalize_uuid(s):
    s = s.replace("{", "").replace("}", "")
    return s.lower() if is_uuid(s) else None


def java_split(rest):
    """`rest.split("/")` as Java does it: trailing empty elements dropped."""
    parts = rest.split("/")
    if len(parts) > 1:
        while parts and parts[-1] == "":
            parts.pop()
    return parts


def parse_uri(attrs):
    if len(attrs) > MAX_ATTRIBUTES:
        raise StepError("ParseUri", f"message has {len(attrs)} attributes, over the limit "
                        f"of {MAX_ATTRIBUTES}", "TooManyAttributes")
    uri = attrs.get("uri")
    if uri is None:
        return attrs  # parsed before: a replay
    if not uri.startswith("/submit/"):
        raise StepError("ParseUri", f"uri `{uri}` has an unknown prefix", "UnknownUriPrefix")
    rest = uri[len("/submit/"):]
    elements = java_split(rest)
    telemetry = rest.startswith("telemetry/")
    keys = TELEMETRY_KEYS if telemetry else GENERIC_KEYS
    expected = len(keys) + telemetry
    if len(elements) < expected:
        raise StepError("ParseUri", f"uri `{uri}` has too few path elements: expected "
                        f"{expected}, found {len(elements)}", "TooFewUriElements")
    if len(elements) > expected:
        raise StepError("ParseUri", f"uri `{uri}` has extra path elements: expected "
                        f"{expected}, found {len(elements)}", "ExtraUriElements")
    pairs = list(zip(keys, elements[1:] if telemetry else elements))
    if telemetry:
        pairs.append(("document_namespace", "telemetry"))
    document_id = dict(pairs)["document_id"]
    if not is_uuid(document_id):
        raise StepError("ParseUri", f"document id `{document_id}` in uri `{uri}` is not a uuid",
                        "InvalidDocumentId")
    out = dict(attrs)
    part = "split_from" in attrs
    for k, v in pairs:
        if part and k in ROUTING and k in attrs:
            continue
        out[k] = v
    return out


def gunzip_bounded(data, limit):
    """Every gzip member of `data`, inflating at most limit + 1 bytes; None when over."""
    cap = limit + 1
    parts = []
    size = 0
    rest = data
    while True:
        d = zlib.decompressobj(wbits=31)
        part = d.decompress(rest, cap - size)
        parts.append(part)
        size += len(part)
        if size >= cap:
            return None
        if not d.eof:
            raise zlib.error("truncated gzip stream")
        rest = d.unused_data
        # a further member only when it looks like one, as the Rust reader decides
        if len(rest) < 10 or not rest.startswith(b"\x1f\x8b\x08"):
            return parts[0] if len(parts) == 1 else b"".join(parts)


def decompress(attrs, payload, limit):
    if not payload.startswith(b"\x1f\x8b"):
        return attrs, payload
    try:
        out = gunzip_bounded(payload, limit)
    except zlib.error as e:
        raise StepError("DecompressPayload", f"corrupt gzip payload of {len(payload)} bytes: "
                        f"{e}", "CorruptGzip") from None
    if out is None:
        # the decompression stops at the payload limit: that step's dead letter
        raise StepError("LimitPayloadSize", f"gzip payload of {len(payload)} bytes decompresses "
                        f"to more than the limit of {limit} bytes", "DecompressedTooLarge")
    attrs = dict(attrs)
    attrs["client_compression"] = "gzip"
    return attrs, out


def parse_proxy(attrs):
    xpp = attrs.pop("x_pipeline_proxy", None)
    if xpp is None:
        return
    if RFC3339.fullmatch(xpp):
        edge = attrs.get("submission_timestamp")
        attrs["submission_timestamp"] = xpp
        if edge is not None:
            attrs["proxy_timestamp"] = edge
        else:
            attrs.pop("proxy_timestamp", None)
    xff = attrs.get("x_forwarded_for")
    if xff is not None:
        attrs["x_forwarded_for"] = xff[:max(xff.rfind(","), 0)]


# user agents repeat: a cache is what a Python team would add (the Rust step parses each one)
@functools.lru_cache(maxsize=4096)
def parse_user_agent(agent):
    """(browser, version, os) by gcp-ingestion's rules, as user_agent.rs scans for them."""
    best = None  # (rank, version found there)
    os_rank = None
    i, n = 0, len(agent)
    while i < n:
        if agent[i] not in UA_FIRST:
            i += 1
            continue
        for rank, (_, pattern, rule, _) in enumerate(BROWSERS):
            if agent.startswith(pattern, i):
                after = i + len(pattern)
                version = None
                if len(rule) == 1 and agent.startswith(rule, after):
                    m = LEADING_DIGITS.match(agent, after + 1)
                    version = m.group() if m else None
                if best is None or rank < best[0] or (rank == best[0] and best[1] is None):
                    best = (rank, version)
                i = after + (len(version) + 1 if version else 0)
                break
        else:
            for rank, (_, pattern) in enumerate(OSES):
                if agent.startswith(pattern, i):
                    if os_rank is None or rank < os_rank:
                        os_rank = rank
                    i += len(pattern)
                    break
            else:
                i += 1
    os_name = OSES[os_rank][0] if os_rank is not None else None
    if best is None:
        return None, None, os_name
    value, _, rule, implied_os = BROWSERS[best[0]]
    if rule.startswith("="):
        version = rule[1:]
    elif rule == "last/":
        version = last_slash_version(agent)
    else:
        version = best[1]
    return value, version, implied_os or os_name


def last_slash_version(agent):
    """gcp-ingestion's `.*/(?<version>\\d+)`: digits after the last `/` followed by a digit, in
    the first line that has one (`.` does not cross a line break)."""
    for line in agent.split("\n"):
        at = len(line)
        while True:
            at = line.rfind("/", 0, at)
            if at < 0:
                break
            m = LEADING_DIGITS.match(line, at + 1)
            if m:
                return m.group()
    return None


def parse_user_agent_step(attrs):
    agent = attrs.pop("user_agent", None)
    if agent is None:
        return
    browser, version, os_name = parse_user_agent(agent)
    for name, value in (("user_agent_browser", browser), ("user_agent_version", version),
                        ("user_agent_os", os_name)):
        if value is not None:
            attrs[name] = value


def scalar_text(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (str, int, float)):
        return v if isinstance(v, str) else json.dumps(v)
    return None


def lift_metadata(doc, attrs):
    """Moves a decoded document's metadata back into attributes (only those absent)."""
    metadata = doc.pop("metadata", None)
    if isinstance(metadata, dict):
        for name, prefix in PREFIXED:
            o = metadata.get(name)
            if isinstance(o, dict):
                for k, v in o.items():
                    v = scalar_text(v)
                    if v is not None:
                        attrs.setdefault(prefix + k, v)
        for name, known in (("header", HEADER_ATTRIBUTES), ("uri", URI_ATTRIBUTES)):
            o = metadata.get(name)
            if isinstance(o, dict):
                for k in known:
                    v = scalar_text(o.get(k))
                    if v is not None:
                        attrs.setdefault(k, v)
        for name in ROUTING:
            v = scalar_text(metadata.get(name))
            if v is not None:
                attrs.setdefault(name, v)
    for name in TOP_LEVEL_STRING_FIELDS:
        v = doc.pop(name, None)
        if isinstance(v, str):
            attrs.setdefault(name, v)
    v = scalar_text(doc.pop("sample_id", None))
    if v is not None:
        attrs.setdefault("sample_id", v)


def check_limits(value, depth=1):
    """At most MAX_DEPTH nested arrays/objects, none longer than MAX_ARRAY_LEN (the recursion
    stops at MAX_DEPTH, far below Python's limit)."""
    if depth > MAX_DEPTH:
        raise StepError("ParsePayload", f"document nested deeper than {MAX_DEPTH} levels",
                        "Limits")
    if len(value) > MAX_ARRAY_LEN:
        raise StepError("ParsePayload", f"{len(value)} elements, over {MAX_ARRAY_LEN}", "Limits")
    for child in value.values() if type(value) is dict else value:
        t = type(child)
        if t is dict or t is list:
            check_limits(child, depth + 1)


def reject_constant(name):
    # serde_json refuses NaN and Infinity, which Python's json accepts
    raise ValueError(f"invalid number {name}")


def text(v):
    return v if isinstance(v, str) and v else None


def get_path(doc, path):
    for k in path:
        if not isinstance(doc, dict) or k not in doc:
            return None
        doc = doc[k]
    return doc


def attributes_from_payload(doc, attrs, pipeline):
    """client_id, sample_id, os, os_version, app_update_channel from the document; returns
    (derived pairs in order, the client-id path to rewrite in normalized form or None)."""
    out = []
    client_info = doc.get("client_info")
    common_os = get_path(doc, ("environment", "system", "os"))
    if isinstance(client_info, dict):
        fields = (("app_update_channel", client_info.get("app_channel")),
                  ("os", client_info.get("os")), ("os_version", client_info.get("os_version")))
    elif isinstance(common_os, dict):
        fields = (("os", common_os.get("name")), ("os_version", common_os.get("version")))
    else:
        fields = (("app_update_channel", doc.get("release_channel")), ("os", doc.get("os")),
                  ("os_version", doc.get("osversion")))
    out.extend((k, text(v)) for k, v in fields if text(v) is not None)
    client_id = attrs.get("client_id")
    edit = None
    for path, overrides in ((("client_info", "client_id"), True), (("client_id",), False),
                            (("clientId",), False)):
        if client_id is not None and not overrides:
            continue
        raw = get_path(doc, path)
        cid = normalize_uuid(raw) if isinstance(raw, str) else None
        if cid is not None:
            if raw != cid:
                edit = (path, cid)
            out.append(("client_id", cid))
            client_id = cid
            if overrides:
                break
    pipeline = pipeline if isinstance(pipeline, dict) else {}
    source_attribute = pipeline.get("sample_id_source_uuid_attribute")
    source_path = pipeline.get("sample_id_source_uuid_payload_path")
    source_attribute = source_attribute if isinstance(source_attribute, str) else None
    if isinstance(source_path, list):
        source_path = [p for p in source_path if isinstance(p, str)]
    else:
        source_path = None
    if source_attribute is None and source_path is None:
        source_attribute = "client_id"
    candidates = []
    if source_attribute == "client_id":
        candidates.append(client_id)
    elif source_attribute is not None:
        found = [v for k, v in out if k == source_attribute]
        candidates.append(found[-1] if found else attrs.get(source_attribute))
    if source_path is not None:
        v = get_path(doc, source_path)
        candidates.append(scalar_text(v) if v is not None else "")
    for c in candidates:
        cid = normalize_uuid(c) if isinstance(c, str) else None
        if cid is not None:
            out.append(("sample_id", str(zlib.crc32(cid.encode()) % 100)))
            break
    return out, edit


def version_from_payload(doc):
    for k in ("version", "v"):
        v = doc.get(k)
        if k in doc and not isinstance(v, (dict, list)):
            return "null" if v is None else scalar_text(v)
    return None


def parse_payload(registry, attrs, payload):
    """Parses and validates the payload; returns (attributes, document)."""
    try:
        doc = json.loads(payload, parse_constant=reject_constant)
    except (ValueError, RecursionError) as e:
        raise StepError("ParsePayload", f"payload is not valid json: {e}", "InvalidJson") from None
    if not isinstance(doc, dict):
        raise StepError("ParsePayload", f"payload is {type(doc).__name__}, not a json object",
                        "NotAnObject")
    if not METADATA_MEMBERS.isdisjoint(doc):
        attrs = dict(attrs)
        lift_metadata(doc, attrs)
    document_id = attrs.get("document_id")
    if document_id is not None and not is_uuid(document_id):
        raise StepError("ParsePayload", f"document_id attribute `{document_id}` is not a uuid",
                        "InvalidDocumentIdAttribute")
    check_limits(doc)
    namespace = attrs.get("document_namespace")
    doctype = attrs.get("document_type")
    if namespace is None or doctype is None:
        name = "document_namespace" if namespace is None else "document_type"
        raise StepError("ParsePayload", f"missing attribute `{name}`", "MissingAttribute")
    versions = registry.schemas.get((snake_case(namespace), snake_case(doctype)))
    if versions is None:
        raise StepError("ParsePayload", f"no schema for doctype `{namespace}/{doctype}`",
                        "UnknownDoctype")
    version = attrs.get("document_version")
    if version is None:
        version = version_from_payload(doc)
        if version is None:
            raise StepError("ParsePayload", f"no version for `{namespace}/{doctype}`",
                            "MissingVersion")
    number = int(version) if version.isascii() and version.isdigit() else None
    schema = versions.get(number) if number is not None and str(number) == version else None
    if schema is None:
        raise StepError("ParsePayload", f"no schema `{namespace}/{doctype}.{version}`",
                        "SchemaNotFound")
    canonical_ns, canonical_dt, number, validator, schema_json = schema
    try:
        validator.validate(doc)
    except jsonschema_rs.ValidationError as e:
        raise StepError("ParsePayload", f"payload does not match schema `{canonical_ns}/"
                        f"{canonical_dt}.{number}`: {e.message}", "Invalid") from None
    derived, edit = attributes_from_payload(doc, attrs, schema_json.get("mozPipelineMetadata"))
    if edit is not None:
        path, cid = edit
        get_path(doc, path[:-1])[path[-1]] = cid
    attrs = dict(attrs)
    attrs["document_namespace"] = canonical_ns
    attrs["document_type"] = canonical_dt
    attrs["document_version"] = str(number)
    attrs.update(derived)
    return attrs, doc


def normalize_channel(name):
    if name in CHANNELS:
        return name
    if name.startswith("nightly-cck-"):
        return "nightly"
    return "beta" if name.startswith("beta") else "Other"


def normalize_os(name):
    if name.startswith("Windows") or name.startswith("WINNT"):
        return "Windows"
    if name.startswith("Darwin"):
        return "Mac"
    if "Linux" in name or "BSD" in name or "SunOS" in name:
        return "Linux"
    if name.startswith("iOS") or "iPhone" in name:
        return "iOS"
    return "Android" if name.startswith("Android") else "Other"


OS_VERSION = re.compile(r"[0-9]+(\.[0-9]+){0,2}")


def normalize_os_version(v):
    m = OS_VERSION.match(v)
    if not m or any(c in v[m.end():] for c in "\n\r\x85\u2028\u2029"):
        return ""
    return m.group()


def normalize_app_name(name):
    return next((app for app in APP_NAMES if name.startswith(app)), "Other")


def normalize_country_code(code):
    upper = code.upper()
    return upper if len(upper) == 2 and upper.isascii() and upper.isupper() else "Other"


def normalize_attributes(attrs):
    for name, source, fn in (("normalized_channel", "app_update_channel", normalize_channel),
                             ("normalized_os", "os", normalize_os),
                             ("normalized_os_version", "os_version", normalize_os_version),
                             ("normalized_app_name", "app_name", normalize_app_name),
                             ("normalized_country_code", "geo_country", normalize_country_code)):
        v = attrs.get(source)
        if v is not None:
            attrs[name] = fn(v)


def add_metadata(attrs, doc):
    """The document with `metadata` and the top-level fields first (metadata.rs's layout)."""
    metadata = {name: {} for name, _ in PREFIXED}
    for k, v in sorted(attrs.items()):
        for name, prefix in PREFIXED:
            if k.startswith(prefix):
                metadata[name][k[len(prefix):]] = v
                break
    metadata["header"] = {k: attrs[k] for k in HEADER_ATTRIBUTES if k in attrs}
    if attrs.get("document_namespace") == "telemetry":
        metadata["uri"] = {k: attrs[k] for k in URI_ATTRIBUTES if k in attrs}
    for k in ROUTING:
        if k in attrs:
            metadata[k] = attrs[k]
    out = {"metadata": metadata}
    for k in TOP_LEVEL_STRING_FIELDS:
        if k in attrs:
            out[k] = attrs[k]
    sample_id = attrs.get("sample_id")
    if sample_id is not None and re.fullmatch(r"-?(0|[1-9][0-9]{0,9})", sample_id) \
            and -2**31 <= int(sample_id) < 2**31:
        out["sample_id"] = int(sample_id)
    out.update(doc)
    return out


def envelope(attrs, payload):
    """The gcp-ingestion json envelope line (attributes sorted, empty ones as null)."""
    attribute_map = json.dumps(attrs, ensure_ascii=False, sort_keys=True,
                               separators=(",", ":")) if attrs else "null"
    return ('{"attributeMap":' + attribute_map + ',"payload":"'
            + base64.b64encode(payload).decode("ascii") + '"}\n')


def partition_path(attrs):
    """`${document_namespace:-unknown}/${document_type:-unknown}/v${document_version:-0}/
    ${submission_date:-unknown}/`, values sanitised as the Rust path template does."""
    parts = []
    for name, default in PARTITION:
        v = attrs.get(name)
        if v is None and name == "submission_date":
            ts = attrs.get("submission_timestamp", "").encode()
            v = ts[:10].decode("utf-8", "replace") if len(ts) >= 10 else None
        v = UNSAFE_PATH_CHAR.sub("_", v or default)
        parts.append(v if v not in ("", ".", "..") else "_")
    return f"{parts[0]}/{parts[1]}/v{parts[2]}/{parts[3]}"


def parse_envelope(line):
    try:
        env = json.loads(line)
        if not isinstance(env, dict):
            raise ValueError("not a json object")
        attrs = env.get("attributeMap") or {}
        if not isinstance(attrs, dict) or not all(isinstance(v, str) for v in attrs.values()):
            raise ValueError("attributeMap is not a map of strings")
        payload = env.get("payload")
        if payload is None:
            return attrs, b""
        if not isinstance(payload, str):
            raise ValueError("payload is not a base64 string")
        return attrs, base64.b64decode(payload, validate=True)
    except (ValueError, binascii.Error) as e:
        raise StepError("ReadInput", f"line is not a message envelope: {e}",
                        "InvalidEnvelope") from None


class Decoder:
    """The job's per-record work: `decode(line, line_number)` gives (folder, output line)
    pairs, decoded records and dead letters alike."""

    def __init__(self, schemas, input_name, job_name="decoder",
                 max_payload_bytes=MAX_PAYLOAD_BYTES):
        self.registry = Registry(schemas)
        self.input_name = input_name
        self.job_name = job_name
        self.max_payload_bytes = max_payload_bytes

    def dead_letter(self, attrs, payload, error, line_number):
        attrs = {k: v for k, v in attrs.items() if k not in CLIENT_IP_ATTRIBUTES}
        extra = {"error_type": error.error_type, "error_message": str(error),
                 "exception_class": f"decoder.{error.kind}", "job_name": self.job_name,
                 "input": self.input_name, "input_type": "file"}
        if line_number is not None:
            extra["input_file"] = self.input_name
            extra["input_line"] = str(line_number)
        for k, v in extra.items():
            b = v.encode()
            # cut at MAX_ATTRIBUTE_BYTES on a character boundary
            attrs[k] = b[:MAX_ATTRIBUTE_BYTES].decode("utf-8", "ignore") \
                if len(b) > MAX_ATTRIBUTE_BYTES else v
        return f"errors/{error.error_type}", envelope(attrs, payload)

    def decode(self, line, line_number=None):
        """One input line (bytes, with or without its newline); None line numbers when the
        runner does not know them (the dead letters then have no input_file/input_line)."""
        line = line.rstrip(b"\n")
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip(b" \t\n\r\x0b\x0c"):
            return []  # blank lines are skipped, as the file source skips them
        try:
            attrs, payload = parse_envelope(line)
        except StepError as e:
            return [self.dead_letter({}, line, e, line_number)]
        for k in REPLAY_STRIPPED_ATTRIBUTES:
            attrs.pop(k, None)
        try:
            attrs = parse_uri(attrs)
            attrs, payload = decompress(attrs, payload, self.max_payload_bytes)
            if len(payload) > self.max_payload_bytes:
                raise StepError("LimitPayloadSize", f"payload of {len(payload)} bytes is over "
                                f"the limit of {self.max_payload_bytes} bytes", "PayloadTooLarge")
            attrs = dict(attrs)
            parse_proxy(attrs)
            parse_user_agent_step(attrs)
            attrs, doc = parse_payload(self.registry, attrs, payload)
        except StepError as e:
            return [self.dead_letter(attrs, payload, e, line_number)]
        normalize_attributes(attrs)
        for k in CLIENT_IP_ATTRIBUTES:
            attrs.pop(k, None)
        body = json.dumps(add_metadata(attrs, doc), ensure_ascii=False,
                          separators=(",", ":")).encode()
        return [(partition_path(attrs), envelope(attrs, body))]


class Outputs:
    """Gzipped ndjson files, one per folder under `root`, named `name` (one writer each);
    lines are buffered and compressed a MiB at a time."""

    BUFFER_BYTES = 1 << 20

    def __init__(self, root, name):
        self.root = root
        self.name = name
        self.files = {}  # folder -> [gzip file, pending lines, pending bytes]

    def write(self, folder, line):
        f = self.files.get(folder)
        if f is None:
            path = os.path.join(self.root, folder)
            os.makedirs(path, exist_ok=True)
            # level 6 is zlib's default, as flate2's on the Rust side
            f = self.files[folder] = [gzip.open(os.path.join(path, self.name), "wb", 6), [], 0]
        f[1].append(line)
        f[2] += len(line)
        if f[2] >= self.BUFFER_BYTES:
            self.flush(f)

    @staticmethod
    def flush(f):
        f[0].write("".join(f[1]).encode())
        f[1].clear()
        f[2] = 0

    def close(self):
        for f in self.files.values():
            self.flush(f)
            f[0].close()
        self.files.clear()

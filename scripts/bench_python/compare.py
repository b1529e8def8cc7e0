"""compare.py REF OUT: checks that a Python run (bytewax_job.py, beam_job.py) did the decoder
job's work: the same as REF, a Rust run (`sluice-baseline decode` or `sluice run`). Exits 1 on
a difference, naming the folders that differ and a sample of the records.

Why not `sluice-baseline compare` (equal lines): the Python job re-serializes the decoded
document (json.dumps: other member order and number spelling than the Rust steps, which
splice the metadata into the payload's bytes), its error messages and exception classes are its
own, and Beam's text source gives no line numbers.

What is compared, per folder (relative path of the directory holding the `*.gz` files, so the
partition `ns/doctype/vN/submission_date` and `errors/<error_type>`), as multisets of records:
  - the number of records in every folder (a folder on one side only is a difference);
  - decoded records (folders outside errors/): the attributes, all of them, equal as maps, and
    the payload equal as parsed JSON (the document with its `metadata`);
  - dead letters (errors/...): the payload bytes equal, and the attributes equal as maps except
    error_message, exception_class and stack_trace (wording and language), and the position
    attributes input_file, input_line and input_offset (Beam does not know them; when both
    sides have input_line, the values must still be equal).
What is not compared: object names, the order of records, the bytes of decoded payloads and
of the envelope line, error wording.

What the Python job does not do that the Rust job does (decoder.py's header says why): stub
installer URIs (/stub/...), the split of documents by a schema's split_config, expiration
policies, geo lookups, payload scrub rules, the 1 GB line limit of the file source; the
generated workload has none of these, and any difference they made would show here.
"""

import base64
import collections
import gzip
import json
import os
import sys

IGNORED_DEAD_LETTER_ATTRIBUTES = {"error_message", "exception_class", "stack_trace",
                                  "input_file", "input_line", "input_offset"}


def canonical(value):
    """A hashable, order-independent form of a parsed JSON value (ints and floats that are
    equal compare equal, as serde_json and Python parse them)."""
    if isinstance(value, dict):
        return ("o", tuple(sorted((k, canonical(v)) for k, v in value.items())))
    if isinstance(value, list):
        return ("a", tuple(canonical(v) for v in value))
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("n", float(value) if isinstance(value, float) and not value.is_integer()
                else int(value))
    return ("s", value)


def record_key(folder, line, lines_with_position):
    env = json.loads(line)
    attrs = env.get("attributeMap") or {}
    payload = base64.b64decode(env.get("payload") or "")
    if folder == "errors" or folder.startswith("errors/"):
        if "input_line" in attrs:
            lines_with_position.append((attrs.get("document_id"), attrs["input_line"]))
        attrs = {k: v for k, v in attrs.items() if k not in IGNORED_DEAD_LETTER_ATTRIBUTES}
        return (tuple(sorted(attrs.items())), payload)
    return (tuple(sorted(attrs.items())), canonical(json.loads(payload)))


def census(root):
    """folder -> Counter of record keys; and the (document_id, input_line) pairs seen."""
    folders = collections.defaultdict(collections.Counter)
    positions = []
    if not os.path.isdir(root):
        sys.exit(f"compare: `{root}` is not a directory")
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            if not name.endswith(".gz"):
                continue
            folder = os.path.relpath(dirpath, root)
            with gzip.open(os.path.join(dirpath, name), "rb") as f:
                for line in f:
                    if line.strip():
                        folders[folder][record_key(folder, line, positions)] += 1
    return folders, positions


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: compare.py REF OUT")
    ref, out = sys.argv[1:]
    a, pos_a = census(ref)
    b, pos_b = census(out)
    differing = []
    for folder in sorted(set(a) | set(b)):
        only_a = a[folder] - b[folder]
        only_b = b[folder] - a[folder]
        if only_a or only_b:
            differing.append((folder, only_a, only_b))
    # input lines where both sides name them: the same (document id, line) pairs
    position_diff = []
    if pos_a and pos_b:
        ca, cb = collections.Counter(pos_a), collections.Counter(pos_b)
        position_diff = list((ca - cb).items())[:3] + list((cb - ca).items())[:3]
    total_a = sum(sum(c.values()) for c in a.values())
    total_b = sum(sum(c.values()) for c in b.values())
    if not differing and not position_diff:
        dead = sum(sum(c.values()) for f, c in a.items() if f.startswith("errors"))
        print(f"equal work: {total_a - dead} decoded records and {dead} dead letters in "
              f"{len(a)} folders, the same on both sides (documents as parsed json, "
              f"error wording not compared)")
        return 0
    print(f"outputs differ: {ref} has {total_a} records, {out} has {total_b}; records only on "
          f"one side, by folder:", file=sys.stderr)
    for folder, only_a, only_b in differing:
        print(f"  {folder}: {sum(only_a.values())} only in the first, "
              f"{sum(only_b.values())} only in the second (counts {sum(a[folder].values())} vs "
              f"{sum(b[folder].values())})", file=sys.stderr)
    for folder, only_a, only_b in differing[:3]:
        for side, only in ((ref, only_a), (out, only_b)):
            for key in list(only)[:2]:
                print(f"  only in {side}: {folder}: {str(key)[:400]}", file=sys.stderr)
    for pair in position_diff:
        print(f"  input line differs: {pair}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

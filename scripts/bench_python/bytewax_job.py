"""The decoder job as a Bytewax dataflow (bytewax 0.21), for scripts/bench.sh (issue 8).

    cd scripts/bench_python
    python -m bytewax.testing "bytewax_job:build_flow('IN.ndjson', 'OUT', 'SCHEMAS')" -p2 -w1

input (each worker reads its own byte range of the file, cut at line starts, as
`sluice-baseline` splits it between threads; no exchange between workers) -> flat_map_batch
(decoder.Decoder: the decoder's steps on each line) -> output (each worker writes its gzipped
ndjson files, one per partition folder, `bytewax-<worker>.ndjson.gz`). Dead letters go to the
same sink, under errors/<error_type>/. No recovery: the source keeps no resume state.

`-p N` starts N processes of one worker each (the issue's "2 processes"); for one process,
bench.sh runs `python -m bytewax.run "bytewax_job:build_flow(...)" -w1` (no launcher process).
"""

import os

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

import decoder

BATCH_LINES = 1000
CHUNK_BYTES = 1 << 20


def line_start_after(f, at):
    """The offset of the first line that starts at or after `at`."""
    if at == 0:
        return 0
    f.seek(at - 1)
    return at - 1 + len(f.readline())


def lines_before(f, end):
    """Lines in [0, end): the line number of the first line of a range is one more."""
    f.seek(0)
    count, left = 0, end
    while left > 0:
        chunk = f.read(min(CHUNK_BYTES, left))
        if not chunk:
            break
        count += chunk.count(b"\n")
        left -= len(chunk)
    return count


class RangePartition(StatelessSourcePartition):
    """(line number, line) of one byte range of the file, a batch at a time."""

    def __init__(self, path, worker_index, worker_count):
        self.f = open(path, "rb")
        size = os.fstat(self.f.fileno()).st_size
        self.start = line_start_after(self.f, size * worker_index // worker_count)
        end = line_start_after(self.f, size * (worker_index + 1) // worker_count)
        self.end = max(end, self.start)
        self.line = lines_before(self.f, self.start)
        self.f.seek(self.start)
        self.offset = self.start

    def next_batch(self):
        if self.offset >= self.end:
            raise StopIteration()
        batch = []
        while len(batch) < BATCH_LINES and self.offset < self.end:
            line = self.f.readline()
            if not line:
                self.offset = self.end
                break
            self.offset += len(line)
            self.line += 1
            batch.append((self.line, line))
        return batch

    def close(self):
        self.f.close()


class FileRanges(DynamicSource):
    def __init__(self, path):
        self.path = path

    def build(self, step_id, worker_index, worker_count):
        return RangePartition(self.path, worker_index, worker_count)


class FolderPartition(StatelessSinkPartition):
    def __init__(self, root, worker_index):
        self.outputs = decoder.Outputs(root, f"bytewax-{worker_index}.ndjson.gz")

    def write_batch(self, items):
        for folder, line in items:
            self.outputs.write(folder, line)

    def close(self):
        self.outputs.close()


class Folders(DynamicSink):
    def __init__(self, root):
        self.root = root

    def build(self, step_id, worker_index, worker_count):
        return FolderPartition(self.root, worker_index)


def build_flow(input_path, out_dir, schemas):
    # the schemas are compiled once per process, when the flow is built
    job = decoder.Decoder(schemas, input_path)

    def decode_batch(items):
        out = []
        for line_number, line in items:
            out.extend(job.decode(line, line_number))
        return out

    flow = Dataflow("decoder")
    lines = op.input("read", flow, FileRanges(input_path))
    records = op.flat_map_batch("decode", lines, decode_batch)
    op.output("write", records, Folders(out_dir))
    return flow

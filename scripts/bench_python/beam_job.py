"""The decoder job as an Apache Beam Python pipeline, for scripts/bench.sh (issue 8).

    python beam_job.py --input IN.ndjson --out OUT --schemas SCHEMAS --workers 2

ReadFromText (bytes, one element per line; Beam splits the file between workers) -> ParDo
(decoder.Decoder: the decoder's steps, compiled once per DoFn instance in setup) -> ParDo
(writes each bundle's records into gzipped ndjson files, one per partition folder,
`beam-<pid>-<n>.ndjson.gz`; dead letters under errors/<error_type>/ in the same output).

Runner: the DirectRunner's batch engine, the FnApiRunner, with direct_num_workers=N and
direct_running_mode=multi_processing (N SDK worker processes). It is named explicitly because
Beam 2.78's DirectRunner first tries the PrismRunner, whose Go binary it downloads at run time
(impossible on this machine), and falls back to the FnApiRunner after that failed attempt.

Beam's text source gives no line numbers: the dead letters have no input_file/input_line
(compare.py does not compare them).
"""

import argparse
import itertools
import os
import sys

import apache_beam as beam
from apache_beam.coders import BytesCoder
from apache_beam.io import ReadFromText
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

HERE = os.path.dirname(os.path.abspath(__file__))
# the SDK worker processes import decoder.py by name
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (HERE, os.environ.get("PYTHONPATH")) if p)
sys.path.insert(0, HERE)

import decoder  # noqa: E402

BUNDLE_NUMBERS = itertools.count()


class Decode(beam.DoFn):
    def __init__(self, schemas, input_name):
        self.schemas = schemas
        self.input_name = input_name
        self.job = None

    def setup(self):
        self.job = decoder.Decoder(self.schemas, self.input_name)

    def process(self, line):
        yield from self.job.decode(line)


class WriteFolders(beam.DoFn):
    """Each bundle writes its own files (finish_bundle closes them)."""

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.outputs = None

    def start_bundle(self):
        name = f"beam-{os.getpid()}-{next(BUNDLE_NUMBERS)}.ndjson.gz"
        self.outputs = decoder.Outputs(self.out_dir, name)

    def process(self, record):
        folder, line = record
        self.outputs.write(folder, line)

    def finish_bundle(self):
        self.outputs.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--schemas", required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    options = PipelineOptions(direct_num_workers=args.workers,
                              direct_running_mode="multi_processing")
    with beam.Pipeline(runner=FnApiRunner(), options=options) as p:
        (p
         | "read" >> ReadFromText(args.input, coder=BytesCoder())
         | "decode" >> beam.ParDo(Decode(os.path.abspath(args.schemas), args.input))
         | "write" >> beam.ParDo(WriteFolders(os.path.abspath(args.out))))


if __name__ == "__main__":
    main()

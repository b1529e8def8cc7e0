//! `sluice-baseline`: the decoder job's work as a hand-written loop, the yardstick of
//! `scripts/bench.sh` (issue 8).
//!
//! `decode` does what `sluice run examples/configs/decoder-local.toml` does to a local ndjson
//! file, without the pipeline SDK's runner (no timely, no epochs, no sinks): N threads each take
//! a byte range of the input (cut at line starts), read it with the file source's
//! [`RecordReader`], run the [`Decoder`](sluice_transforms::decode::Decoder)'s steps one after
//! the other by calling the same per-record functions (strip replay attributes, `ParseUri`,
//! `DecompressPayload` bounded by the payload limit, `LimitPayloadSize`, `ParseProxy`,
//! `ParseUserAgent`, `ParsePayload` with the registry's validators (payload rules before
//! validation, and the split of documents whose schema has a `split_config`), then on each
//! message it gives `NormalizeAttributes`, the client-IP scrub, `AddMetadata`), and write json envelopes, gzipped, into one file per
//! rendered partition path and thread through a 1 MiB `BufWriter`; dead letters likewise,
//! with the attributes the runner gives them (`job_name`, `input`, `input_type`, position) and
//! without client IPs, as the job writes them.
//! Calling the same step functions makes the work equal by construction; `compare` checks it on
//! the outputs.
//!
//! `compare A B` checks that two output directories hold the same records: the multiset of
//! (folder, line) pairs of every `*.gz` file, gunzipped, with the volatile `stack_trace`
//! attribute of dead letters removed. Object names may differ. Exits 1 on a difference, naming
//! the folders that differ and a sample of the lines.
//!
//! ```text
//! sluice-baseline decode --input data.ndjson --out /tmp/base --threads 2
//! sluice-baseline compare /tmp/base /tmp/sluice-out
//! ```

// The same allocator as the `sluice` binary: the comparison is of the work, not of allocators.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::hash::{DefaultHasher, Hasher};
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use flate2::write::GzEncoder;
use sluice::{DeadLetter, Failure, Message};
use sluice_schemas::{Limits, SchemaRegistry};
use sluice_transforms::decode::{
    AddMetadata, DecodeError, DecompressPayload, LimitPayloadSize, NormalizeAttributes,
    ParsePayload, ParseProxy, ParseUri, ParseUserAgent, Payloads, REPLAY_STRIPPED_ATTRIBUTES,
};
use sluice_transforms::io::file::RecordReader;
use sluice_transforms::io::format::{InputFormat, OutputFormat};
use sluice_transforms::io::object::PathTemplate;
use sluice_transforms::io::units::parse_size;
use sluice_transforms::scrub::ScrubAttributes;

/// Buffer of each output file, and of the input reader.
const BUFFER_BYTES: usize = 1 << 20;

#[derive(Parser)]
#[command(
    name = "sluice-baseline",
    about = "The decoder job as a hand-written loop (benchmark baseline)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decode an ndjson file of submissions into gzipped json envelopes per partition.
    Decode {
        /// The input file (gcp-ingestion ndjson envelopes), named as `source.path` names it.
        #[arg(long)]
        input: PathBuf,
        /// Output directory (decoded records and dead letters).
        #[arg(long)]
        out: PathBuf,
        /// Threads, each decoding a byte range of the input.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// The schema registry.
        #[arg(long, default_value = "schemas/json")]
        schemas: PathBuf,
        /// Largest decompressed payload (as `decoder.max_payload_bytes`).
        #[arg(long, default_value = "8 MiB")]
        max_payload_bytes: String,
        /// Partition path of decoded records (as `sink.path`).
        #[arg(
            long,
            default_value = "${document_namespace:-unknown}/${document_type:-unknown}/v${document_version:-0}/${submission_date:-unknown}/"
        )]
        path: String,
        /// Partition path of dead letters (as `dead_letter.path`).
        #[arg(long, default_value = "errors/${error_type:-unknown}/")]
        dead_letter_path: String,
        /// The job name dead letters carry.
        #[arg(long, default_value = "decoder")]
        job_name: String,
    },
    /// Check that two output directories hold the same records (exit 1 if not).
    Compare {
        /// One output directory.
        a: PathBuf,
        /// The other.
        b: PathBuf,
        /// Folders under this prefix hold dead letters (for the summary).
        #[arg(long, default_value = "errors/")]
        dead_letter_prefix: String,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Decode {
            input,
            out,
            threads,
            schemas,
            max_payload_bytes,
            path,
            dead_letter_path,
            job_name,
        } => (|| {
            let max_payload_bytes = usize::try_from(parse_size(&max_payload_bytes)?)?;
            let registry = Arc::new(
                SchemaRegistry::load(&schemas)
                    .with_context(|| format!("cannot load schemas `{}`", schemas.display()))?,
            );
            let job = Job {
                input_name: input.display().to_string(),
                steps: Steps::new(registry, max_payload_bytes),
                path: PathTemplate::parse(&path)?,
                dead_letter_path: PathTemplate::parse(&dead_letter_path)?,
                job_name,
                out,
            };
            let counts = decode(&job, &input, threads.max(1))?;
            eprintln!(
                "sluice-baseline: {} records read, {} decoded, {} dead letters",
                counts.decoded + counts.dead,
                counts.decoded,
                counts.dead
            );
            Ok(true)
        })(),
        Command::Compare {
            a,
            b,
            dead_letter_prefix,
        } => compare(&a, &b, &dead_letter_prefix),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("sluice-baseline: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The decoder's steps with the job's settings (what `Decoder::new(..).with_max_payload_bytes`
/// chains).
struct Steps {
    decompress: DecompressPayload,
    limit: LimitPayloadSize,
    parse: ParsePayload,
}

impl Steps {
    fn new(registry: Arc<SchemaRegistry>, max_payload_bytes: usize) -> Self {
        let limit = LimitPayloadSize::new(max_payload_bytes);
        Steps {
            decompress: DecompressPayload::new().limited_by(&limit),
            limit,
            parse: ParsePayload::new(registry).with_limits(Limits::default()),
        }
    }

    /// One message through every step up to `ParsePayload` (which applies the payload rules
    /// and splits a document whose schema says so); a rejected message comes back as the step
    /// received it, with the step's name as error type. Each message it gives then goes
    /// through [`Steps::finish`].
    // The message comes back whole, as the steps' owned maps give it, so that dead-lettering it
    // copies nothing: the large `Err` is the design (as in `sluice_transforms::decode`).
    #[allow(clippy::result_large_err)]
    fn decode(&self, mut m: Message) -> Result<Payloads, (Message, &'static str, Failure)> {
        for k in REPLAY_STRIPPED_ATTRIBUTES {
            m.attributes.remove(*k);
        }
        let m = ParseUri::apply_owned(m).map_err(|(m, e)| (m, "ParseUri", e.into()))?;
        let m = self.decompress.apply_owned(m).map_err(|(m, e)| {
            // the Decoder's gunzip stops at the payload limit and reports it as that step's
            if matches!(e, DecodeError::DecompressedTooLarge { .. }) {
                (m, "LimitPayloadSize", e.into())
            } else {
                (m, "DecompressPayload", e.into())
            }
        })?;
        let mut m = self
            .limit
            .apply_owned(m)
            .map_err(|(m, e)| (m, "LimitPayloadSize", e.into()))?;
        ParseProxy::apply(&mut m);
        ParseUserAgent::apply(&mut m);
        self.parse.apply(m).map_err(|(m, e)| {
            // a payload rule's drop is a `ScrubPayload` dead letter, as in the Decoder
            if matches!(e, DecodeError::DroppedByRule { .. }) {
                (m, "ScrubPayload", e.into())
            } else {
                (m, "ParsePayload", e.into())
            }
        })
    }

    /// The steps after `ParsePayload`, on each message it gave.
    #[allow(clippy::result_large_err)]
    fn finish(&self, mut m: Message) -> Result<Message, (Message, &'static str, Failure)> {
        NormalizeAttributes::apply(&mut m);
        // The Decoder's default scrubbing: client IPs go before the metadata is nested.
        ScrubAttributes::client_ip().scrub(&mut m.attributes);
        AddMetadata::apply_owned(m).map_err(|(m, e)| (m, "AddMetadata", e.into()))
    }
}

struct Job {
    input_name: String,
    steps: Steps,
    path: PathTemplate,
    dead_letter_path: PathTemplate,
    job_name: String,
    out: PathBuf,
}

impl Job {
    /// The provenance the runner gives every dead letter (`DeadLetters` of a file source),
    /// and the job's default scrubbing of dead letters (client IPs).
    fn finish(&self, mut dl: DeadLetter) -> DeadLetter {
        dl.job_name.get_or_insert_with(|| self.job_name.clone());
        dl.input.get_or_insert_with(|| self.input_name.clone());
        dl.input_type.get_or_insert_with(|| "file".to_string());
        ScrubAttributes::client_ip().scrub_dead_letter(dl)
    }
}

#[derive(Default)]
struct Counts {
    decoded: u64,
    dead: u64,
}

/// Splits the input into `threads` byte ranges at line starts and decodes them in parallel.
fn decode(job: &Job, input: &Path, threads: usize) -> anyhow::Result<Counts> {
    let size = std::fs::metadata(input)
        .with_context(|| format!("cannot read `{}`", input.display()))?
        .len();
    let mut starts = vec![0u64];
    for k in 1..threads as u64 {
        let at = line_start_after(input, size * k / threads as u64)?;
        starts.push(at.max(*starts.last().unwrap_or(&0)));
    }
    starts.push(size);
    let ranges: Vec<(u64, u64)> = starts.windows(2).map(|w| (w[0], w[1])).collect();
    // Input positions are absolute line numbers: count the lines of every range but the last
    // first, in parallel, so that a range knows how many precede it.
    let lines: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = ranges[..ranges.len() - 1]
            .iter()
            .map(|&(a, b)| s.spawn(move || count_lines(input, a, b)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a line count panicked")))
            })
            .collect::<anyhow::Result<Vec<u64>>>()
    })?;
    let mut before = 0;
    let mut work = Vec::new();
    for (k, &(a, b)) in ranges.iter().enumerate() {
        work.push((k, a, b, before));
        before += lines.get(k).copied().unwrap_or(0);
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = work
            .into_iter()
            .map(|(k, a, b, before)| s.spawn(move || decode_range(job, input, k, a, b, before)))
            .collect();
        let mut total = Counts::default();
        for h in handles {
            let c = h
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a decoding thread panicked")))?;
            total.decoded += c.decoded;
            total.dead += c.dead;
        }
        Ok(total)
    })
}

/// The offset of the first line that starts at or after `at`.
fn line_start_after(input: &Path, at: u64) -> anyhow::Result<u64> {
    if at == 0 {
        return Ok(0);
    }
    let mut f = BufReader::new(File::open(input)?);
    f.seek(SeekFrom::Start(at - 1))?;
    let mut skipped = Vec::new();
    let n = f.read_until(b'\n', &mut skipped)?;
    Ok(at - 1 + n as u64)
}

/// Lines the reader counts in `[a, b)` (a last line without a newline counts too).
fn count_lines(input: &Path, a: u64, b: u64) -> anyhow::Result<u64> {
    let mut f = File::open(input)?;
    f.seek(SeekFrom::Start(a))?;
    let mut f = f.take(b - a);
    let mut buf = vec![0u8; BUFFER_BYTES];
    let (mut lines, mut last) = (0u64, b'\n');
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
        last = buf[n - 1];
    }
    Ok(lines + u64::from(last != b'\n'))
}

fn decode_range(
    job: &Job,
    input: &Path,
    thread: usize,
    a: u64,
    b: u64,
    lines_before: u64,
) -> anyhow::Result<Counts> {
    let mut f = File::open(input)?;
    f.seek(SeekFrom::Start(a))?;
    let mut reader = RecordReader::new(
        BufReader::with_capacity(BUFFER_BYTES, f.take(b - a)),
        InputFormat::Json,
    )
    .with_file_name(job.input_name.clone())
    .starting_at(lines_before, a);
    let name = format!("baseline-{thread}.ndjson.gz");
    let mut decoded = Outputs::new(&job.out, &job.path, &name);
    let mut dead = Outputs::new(&job.out, &job.dead_letter_path, &name);
    let mut counts = Counts::default();
    let mut batch = Vec::with_capacity(1024);
    loop {
        let read = reader
            .read_batch(&mut batch, 1024, 8 << 20)
            .with_context(|| format!("cannot read `{}`", input.display()))?;
        for record in batch.drain(..) {
            let parsed = match record {
                Ok(m) => job
                    .steps
                    .decode(m)
                    .map_err(|(m, step, failure)| DeadLetter::new(m, step, failure)),
                Err(dl) => Err(dl),
            };
            let mut emit = |result: Result<Message, DeadLetter>| -> anyhow::Result<()> {
                match result {
                    Ok(m) => {
                        decoded.write(&m)?;
                        counts.decoded += 1;
                    }
                    Err(dl) => {
                        dead.write(&job.finish(dl).to_message())?;
                        counts.dead += 1;
                    }
                }
                Ok(())
            };
            match parsed {
                // one message, or the parts of a split document, each finished on its own
                Ok(payloads) => {
                    for m in payloads {
                        emit(
                            job.steps
                                .finish(m)
                                .map_err(|(m, step, failure)| DeadLetter::new(m, step, failure)),
                        )?;
                    }
                }
                Err(dl) => emit(Err(dl))?,
            }
        }
        if read.end {
            break;
        }
    }
    decoded.finish()?;
    dead.finish()?;
    Ok(counts)
}

/// One gzipped file per rendered partition path.
struct Outputs<'a> {
    dir: &'a Path,
    template: &'a PathTemplate,
    name: &'a str,
    files: HashMap<String, GzEncoder<BufWriter<File>>>,
    path: String,
    scratch: String,
    line: Vec<u8>,
}

impl<'a> Outputs<'a> {
    fn new(dir: &'a Path, template: &'a PathTemplate, name: &'a str) -> Self {
        Outputs {
            dir,
            template,
            name,
            files: HashMap::new(),
            path: String::new(),
            scratch: String::new(),
            line: Vec::new(),
        }
    }

    fn write(&mut self, m: &Message) -> anyhow::Result<()> {
        self.path.clear();
        self.template.render_into(m, &mut self.path);
        self.line.clear();
        OutputFormat::Json.write_record_with(m, &mut self.scratch, &mut self.line);
        let file = match self.files.get_mut(self.path.as_str()) {
            Some(f) => f,
            None => {
                let folder = self.dir.join(&self.path);
                std::fs::create_dir_all(&folder)
                    .with_context(|| format!("cannot create `{}`", folder.display()))?;
                let file = File::create(folder.join(self.name))?;
                self.files
                    .entry(self.path.clone())
                    .or_insert(GzEncoder::new(
                        BufWriter::with_capacity(BUFFER_BYTES, file),
                        flate2::Compression::default(),
                    ))
            }
        };
        file.write_all(&self.line)?;
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        for (path, gz) in self.files {
            gz.finish()
                .and_then(|mut w| w.flush())
                .with_context(|| format!("cannot write `{path}`"))?;
        }
        Ok(())
    }
}

/// Lines of every `*.gz` file under `root`, by folder relative to `root`, as a multiset of
/// 128-bit line hashes (counts), with `stack_trace` removed from envelopes that have one.
struct Census {
    counts: HashMap<(String, u128), i64>,
    lines: BTreeMap<String, u64>,
}

fn line_hash(line: &[u8]) -> u128 {
    // Two fixed-key SipHashes: deterministic within a run, which is all a comparison needs.
    let (mut a, mut b) = (DefaultHasher::new(), DefaultHasher::new());
    a.write(line);
    b.write_u8(0x5a);
    b.write(line);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

/// The line as compared: without the volatile `stack_trace` attribute.
fn normalized(line: &[u8]) -> anyhow::Result<Vec<u8>> {
    if memchr::memmem::find(line, b"\"stack_trace\"").is_none() {
        return Ok(line.to_vec());
    }
    let mut m = Message::from_json_line(line).context("a line with a stack trace")?;
    m.attributes.remove("stack_trace");
    let mut out = String::new();
    m.write_json_line(&mut out);
    Ok(out.into_bytes())
}

fn gz_files(root: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in
        std::fs::read_dir(root).with_context(|| format!("cannot list `{}`", root.display()))?
    {
        let path = entry?.path();
        if path.is_dir() {
            gz_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "gz") {
            out.push(path);
        }
    }
    Ok(())
}

/// Calls `f(folder, normalized line)` for every line under `root`.
fn each_line(
    root: &Path,
    mut f: impl FnMut(&str, &[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut files = Vec::new();
    gz_files(root, &mut files)?;
    files.sort();
    let mut line = Vec::new();
    for path in files {
        let folder = path
            .parent()
            .and_then(|p| p.strip_prefix(root).ok())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let mut r = BufReader::with_capacity(
            BUFFER_BYTES,
            flate2::read::MultiGzDecoder::new(File::open(&path)?),
        );
        loop {
            line.clear();
            if r.read_until(b'\n', &mut line)
                .with_context(|| format!("cannot gunzip `{}`", path.display()))?
                == 0
            {
                break;
            }
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            f(&folder, &normalized(&line)?)?;
        }
    }
    Ok(())
}

fn census(root: &Path, sign: i64, into: &mut Census) -> anyhow::Result<u64> {
    let mut total = 0;
    each_line(root, |folder, line| {
        *into
            .counts
            .entry((folder.to_string(), line_hash(line)))
            .or_default() += sign;
        if sign > 0 {
            *into.lines.entry(folder.to_string()).or_default() += 1;
        }
        total += 1;
        Ok(())
    })?;
    Ok(total)
}

fn compare(a: &Path, b: &Path, dead_letter_prefix: &str) -> anyhow::Result<bool> {
    let mut c = Census {
        counts: HashMap::new(),
        lines: BTreeMap::new(),
    };
    let total_a = census(a, 1, &mut c)?;
    let total_b = census(b, -1, &mut c)?;
    let differing: HashMap<(String, u128), i64> =
        c.counts.into_iter().filter(|(_, n)| *n != 0).collect();
    if differing.is_empty() {
        let dead: u64 = c
            .lines
            .iter()
            .filter(|(f, _)| f.starts_with(dead_letter_prefix.trim_end_matches('/')))
            .map(|(_, n)| n)
            .sum();
        println!(
            "equal work: {} decoded records and {} dead letters in {} folders, the same on both sides",
            total_a - dead,
            dead,
            c.lines.len()
        );
        return Ok(true);
    }
    let mut folders: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for ((folder, _), n) in &differing {
        let e = folders.entry(folder).or_default();
        if *n > 0 {
            e.0 += n;
        } else {
            e.1 -= n;
        }
    }
    eprintln!(
        "outputs differ: {} has {total_a} lines, {} has {total_b}; lines only on one side, by folder:",
        a.display(),
        b.display()
    );
    for (folder, (only_a, only_b)) in &folders {
        eprintln!("  {folder}: {only_a} only in the first, {only_b} only in the second");
    }
    for (root, side) in [(a, 1), (b, -1)] {
        let mut shown = 0;
        each_line(root, |folder, line| {
            let n = differing
                .get(&(folder.to_string(), line_hash(line)))
                .copied()
                .unwrap_or(0);
            if n * side > 0 && shown < 3 {
                shown += 1;
                let text = String::from_utf8_lossy(&line[..line.len().min(400)]);
                eprintln!("  only in {}: {folder}: {text}", root.display());
            }
            Ok(())
        })?;
    }
    Ok(false)
}

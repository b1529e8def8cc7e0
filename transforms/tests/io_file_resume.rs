//! The file source with a state directory: a run that fails part-way persists what every sink
//! made durable, and the next run resumes right after it; changed inputs and corrupt
//! checkpoints are handled as documented on `FileSource::with_state_dir`.

use std::io::Write;
use std::path::{Path, PathBuf};

use sluice::{
    BoxError, Epoch, EpochBounds, InFlightBounds, MemorySink, Message, Pipeline, Sink, SinkContext,
    SinkWriter, SourcePosition, WriteFuture,
};
use sluice_schemas::heka::{encode_frame, message_to_heka};
use sluice_transforms::io::file::{FileCheckpoint, FileSource};
use sluice_transforms::io::format::InputFormat;

/// Records per epoch: with one epoch in flight at a time, the epochs before the one holding
/// the poisoned record are acknowledged (and persisted) before it is read.
const EPOCH: usize = 10;

/// A memory sink whose write fails for an epoch holding a payload that starts with `poison`,
/// when armed.
#[derive(Clone, Default)]
struct Poisoned(MemorySink<Message>, bool);

impl Poisoned {
    fn armed() -> Self {
        Poisoned(MemorySink::new(), true)
    }
}

impl Sink for Poisoned {
    type Input = Message;
    fn kind(&self) -> &str {
        "poisoned"
    }
    fn open(&self, _ctx: &SinkContext) -> Result<Box<dyn SinkWriter<Message>>, BoxError> {
        Ok(Box::new(self.clone()))
    }
}

impl SinkWriter<Message> for Poisoned {
    fn write(&mut self, epoch: Epoch, records: Vec<Message>) -> WriteFuture<Message> {
        if self.1 && records.iter().any(|m| m.payload.starts_with(b"poison")) {
            return Box::pin(std::future::ready(Err("poisoned record".into())));
        }
        self.0.write(epoch, records)
    }
}

struct Run {
    output: Vec<Message>,
    dead: Vec<sluice::DeadLetter>,
}

fn run(source: FileSource, sink: Poisoned) -> sluice::Result<Run> {
    let dead = run_into(source, sink.clone())?;
    Ok(Run {
        output: sink.0.records(),
        dead: dead.records(),
    })
}

/// Runs `source` into `sink` with one epoch of `EPOCH` records in flight at a time; the dead
/// letters.
fn run_into<S>(source: FileSource, sink: S) -> sluice::Result<MemorySink<sluice::DeadLetter>>
where
    S: Sink<Input = Message> + Clone + Send + Sync + 'static,
{
    let dead = MemorySink::new();
    let (o, d) = (sink, dead.clone());
    Pipeline::new("resume-test")
        .workers(1)
        .stack_traces(false)
        .epoch_bounds(EpochBounds {
            max_records: EPOCH,
            ..EpochBounds::default()
        })
        .in_flight_bounds(InFlightBounds {
            max_epochs: 1,
            ..InFlightBounds::default()
        })
        .run(move |p| {
            let mut dead_letters = p.dead_letters();
            p.read_with_failures("read", source.clone())
                .failures_to(&mut dead_letters)
                .write("write", o.clone());
            dead_letters.write("dead_letters", d.clone());
            Ok(())
        })?;
    Ok(dead)
}

fn payloads(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8(m.payload.to_vec()).unwrap())
        .collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// Payload of record `i` (1-based): record 55 is poisoned.
fn payload(i: usize) -> String {
    if i == 55 {
        format!("poison {i}")
    } else {
        format!("record {i}")
    }
}

fn source(input: &Path, format: InputFormat, state: &Path) -> FileSource {
    FileSource::glob(input.display().to_string(), format).with_state_dir(state)
}

/// Runs a job whose sink fails on record 55 of `input` (100 records), then a healthy one with the same state
/// directory, and checks that the second run reads exactly what the first did not
/// acknowledge: records 51 to 100.
fn fails_then_resumes(input: &Path, format: InputFormat) -> (FileCheckpoint, Run) {
    let state = input.parent().unwrap().join("state");
    let first_source = source(input, format, &state);
    let first = Poisoned::armed();
    let Err(e) = run(first_source.clone(), first.clone()) else {
        panic!("the poisoned run must fail")
    };
    assert!(sluice::chain(&e).contains("poisoned record"), "{e}");
    let acked = first_source
        .checkpoints()
        .get(input)
        .expect("the epochs before the poisoned one are acknowledged");
    assert!(!acked.complete);
    let first_out = payloads(&first.0.records());
    let expected_first: Vec<String> = (1..=50).map(payload).collect();
    assert_eq!(
        &first_out[..50],
        &expected_first[..],
        "five epochs were durable"
    );

    let second = run(source(input, format, &state), Poisoned::default()).unwrap();
    let expected: Vec<String> = (51..=100).map(payload).collect();
    assert_eq!(payloads(&second.output), expected);
    (acked, second)
}

/// Writes `lines` as a text file at `path`, gzipped if the name ends in `.gz`.
fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        gzip(text.as_bytes())
    } else {
        text.into_bytes()
    };
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn text_resumes_after_the_acknowledged_lines() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let lines: Vec<String> = (1..=100).map(payload).collect();
    write_lines(&input, &lines);
    let (acked, _) = fails_then_resumes(&input, InputFormat::Text);
    assert_eq!(acked.lines, 50);
}

#[test]
fn gzipped_json_resumes_after_the_acknowledged_lines_with_true_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson.gz");
    // The poisoned payload must reach the sink unchanged: json envelopes of each payload,
    // with a broken line after the checkpoint.
    let mut lines: Vec<String> = (1..=100)
        .map(|i| Message::new(payload(i)).to_json_line())
        .collect();
    lines.push("not json".to_string());
    write_lines(&input, &lines);
    let (acked, second) = fails_then_resumes(&input, InputFormat::Json);
    assert_eq!(acked.lines, 50);
    assert_eq!(second.dead.len(), 1);
    assert_eq!(second.dead[0].source_position["input_line"], "101");
}

#[test]
fn heka_resumes_after_the_acknowledged_bytes() {
    for name in ["in.heka", "in.heka.gz"] {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join(name);
        let mut stream = Vec::new();
        let mut ends = Vec::new();
        for i in 1..=100 {
            let m = Message::new(payload(i)).with_attribute("uri", "/submit/x");
            stream.extend(encode_frame(&message_to_heka(&m).unwrap()));
            ends.push(stream.len() as u64);
        }
        let bytes = if name.ends_with(".gz") {
            gzip(&stream)
        } else {
            stream
        };
        std::fs::write(&input, bytes).unwrap();
        let (acked, second) = fails_then_resumes(&input, InputFormat::Heka);
        assert_eq!(acked.offset, ends[49], "{name}");
        let first = second.output[0].position.clone().unwrap();
        assert_eq!(
            first,
            SourcePosition::Offset {
                file: Some(input.display().to_string().into()),
                offset: ends[49],
            },
            "{name}"
        );
    }
}

fn state_files(state: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[test]
fn a_whole_file_is_skipped_and_a_changed_one_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.txt"), dir.path().join("b.txt"));
    write_lines(&a, &["a1".into(), "a2".into()]);
    write_lines(&b, &["b1".into(), "b2".into()]);
    let state = dir.path().join("state");
    let both = || {
        FileSource::new(
            [a.display().to_string(), b.display().to_string()],
            InputFormat::Text,
        )
        .with_state_dir(&state)
    };
    let first = run(both(), Poisoned::default()).unwrap();
    assert_eq!(payloads(&first.output), ["a1", "a2", "b1", "b2"]);
    assert_eq!(state_files(&state).len(), 2);

    let again = both();
    let second = run(again.clone(), Poisoned::default()).unwrap();
    assert!(second.output.is_empty(), "{:?}", second.output);
    assert!(again.checkpoints().get(&a).unwrap().complete);

    // b changes (another length, so size tells even within the same mtime tick)
    write_lines(&b, &["b1".into(), "b2".into(), "b3".into()]);
    let third = run(both(), Poisoned::default()).unwrap();
    assert_eq!(payloads(&third.output), ["b1", "b2", "b3"]);
}

#[test]
fn a_corrupt_checkpoint_fails_the_run_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("a.txt");
    write_lines(&input, &["one".into()]);
    let state = dir.path().join("state");
    run(
        source(&input, InputFormat::Text, &state),
        Poisoned::default(),
    )
    .unwrap();
    let files = state_files(&state);
    assert_eq!(files.len(), 1);
    std::fs::write(&files[0], "{\"version\":1,\"path\":").unwrap();
    let Err(e) = run(
        source(&input, InputFormat::Text, &state),
        Poisoned::default(),
    ) else {
        panic!("a corrupt checkpoint must fail the run")
    };
    let msg = sluice::chain(&e);
    assert!(msg.contains("corrupt checkpoint"), "{msg}");
    assert!(msg.contains(&files[0].display().to_string()), "{msg}");
    // deleting it is the documented way out: the input is read again
    std::fs::remove_file(&files[0]).unwrap();
    let r = run(
        source(&input, InputFormat::Text, &state),
        Poisoned::default(),
    )
    .unwrap();
    assert_eq!(payloads(&r.output), ["one"]);
}

#[test]
fn a_state_dir_that_is_a_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("a.txt");
    write_lines(&input, &["one".into()]);
    let state = dir.path().join("state");
    std::fs::write(&state, "").unwrap();
    let Err(e) = run(
        source(&input, InputFormat::Text, &state),
        Poisoned::default(),
    ) else {
        panic!("a state dir that is a file must fail the run")
    };
    assert!(sluice::chain(&e).contains("file source state"), "{e}");
}

#[test]
fn a_file_read_in_splits_resumes_each_split_after_its_acknowledged_lines() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let lines: Vec<String> = (1..=100).map(payload).collect();
    write_lines(&input, &lines);
    let state = dir.path().join("state");
    // about 11 lines per split: the poisoned epoch (records 51 to 60) lies across two splits
    let split = |state: &Path| source(&input, InputFormat::Text, state).split_bytes(120);
    assert!(split(&state).unit_count().unwrap() >= 8);

    let first_source = split(&state);
    let first = Poisoned::armed();
    assert!(run(first_source.clone(), first.clone()).is_err());
    assert_eq!(
        payloads(&first.0.records())[..50],
        (1..=50).map(payload).collect::<Vec<_>>()[..]
    );
    let acked = first_source.checkpoints().all();
    assert!(
        acked
            .keys()
            .all(|k| k.display().to_string().contains("in.txt@")),
        "{acked:?}"
    );
    assert!(acked.values().any(|c| c.complete));
    assert!(acked.values().all(|c| c.lines <= 50), "{acked:?}");

    let second = run(split(&state), Poisoned::default()).unwrap();
    assert_eq!(
        payloads(&second.output),
        (51..=100).map(payload).collect::<Vec<_>>()
    );
    let third = run(split(&state), Poisoned::default()).unwrap();
    assert!(third.output.is_empty(), "{:?}", third.output);
}

/// A sink that, on the epoch holding record 30, replaces the state directory with a file, so
/// that saving the positions acknowledged after it fails.
#[derive(Clone)]
struct BreaksState(MemorySink<Message>, PathBuf);

impl Sink for BreaksState {
    type Input = Message;
    fn kind(&self) -> &str {
        "breaks-state"
    }
    fn open(&self, _ctx: &SinkContext) -> Result<Box<dyn SinkWriter<Message>>, BoxError> {
        Ok(Box::new(self.clone()))
    }
}

impl SinkWriter<Message> for BreaksState {
    fn write(&mut self, epoch: Epoch, records: Vec<Message>) -> WriteFuture<Message> {
        if records.iter().any(|m| m.payload.as_ref() == b"record 30") {
            std::fs::remove_dir_all(&self.1).unwrap();
            std::fs::write(&self.1, "not a directory").unwrap();
        }
        self.0.write(epoch, records)
    }
}

#[test]
fn a_checkpoint_that_cannot_be_saved_mid_run_fails_the_run_naming_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("a.txt");
    write_lines(&input, &(1..=100).map(payload).collect::<Vec<_>>());
    let state = dir.path().join("state");
    let src = source(&input, InputFormat::Text, &state);
    let result = run_into(src, BreaksState(MemorySink::new(), state.clone()));
    let Err(e) = result else {
        panic!("a run whose checkpoints cannot be saved must fail")
    };
    let message = sluice::chain(&e);
    assert!(message.contains("file source state"), "{message}");
    assert!(message.contains(&state.display().to_string()), "{message}");
}

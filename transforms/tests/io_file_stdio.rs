//! stdin source and stdout/stderr/writer sinks: injected readers and writers, and the real
//! standard streams in a child process.

use std::io::{self, Read, Write};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};

use sluice::{DeadLetter, MemorySink, MemorySource, Message, Pipeline};
use sluice_schemas::heka::{encode_frame, message_to_heka};
use sluice_transforms::io::format::{InputFormat, OutputFormat, READ_INPUT_ERROR_TYPE};
use sluice_transforms::io::stdio::{StderrSink, StdinSource, StdoutSink, WriterSink};

fn read(
    format: InputFormat,
    input: impl Read + Send + 'static,
    workers: usize,
) -> sluice::Result<(Vec<Message>, Vec<DeadLetter>)> {
    let (out, dead) = (MemorySink::new(), MemorySink::new());
    let (o, d) = (out.clone(), dead.clone());
    // built once and cloned into every worker: worker 0 takes the reader
    let source = StdinSource::from_reader(format, input);
    Pipeline::new("stdin-test")
        .workers(workers)
        .stack_traces(false)
        .run(move |p| {
            let mut dl = p.dead_letters();
            p.read_with_failures("read", source.clone())
                .failures_to(&mut dl)
                .write("write", o.clone());
            dl.write("dead_letters", d.clone());
            Ok(())
        })?;
    Ok((out.sorted(), dead.sorted()))
}

#[test]
fn json_lines_from_a_reader_each_once_with_positions() {
    let input = format!(
        "{}\n\n{}\nnot json\n{}",
        Message::new("a").with_attribute("k", "v").to_json_line(),
        Message::new("b").to_json_line(),
        Message::new("c").to_json_line(),
    );
    for workers in [1, 2] {
        let (out, dead) =
            read(InputFormat::Json, io::Cursor::new(input.clone()), workers).expect("runs");
        assert_eq!(
            out,
            vec![
                Message::new("a").with_attribute("k", "v"),
                Message::new("b"),
                Message::new("c")
            ]
        );
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].original.payload, "not json");
        assert_eq!(dead[0].error_type, READ_INPUT_ERROR_TYPE);
        assert_eq!(dead[0].input_type.as_deref(), Some("stdin"));
        assert_eq!(dead[0].source_position["input_line"], "4");
        assert!(!dead[0].source_position.contains_key("input_file"));
    }
}

/// A sink that fails the epoch holding `poison`, and keeps the others.
#[derive(Clone, Default)]
struct Poisoned(MemorySink<Message>);

impl sluice::Sink for Poisoned {
    type Input = Message;
    fn kind(&self) -> &str {
        "poisoned"
    }
    fn open(
        &self,
        _ctx: &sluice::SinkContext,
    ) -> Result<Box<dyn sluice::SinkWriter<Message>>, sluice::BoxError> {
        Ok(Box::new(self.clone()))
    }
}

impl sluice::SinkWriter<Message> for Poisoned {
    fn write(
        &mut self,
        epoch: sluice::Epoch,
        records: Vec<Message>,
    ) -> sluice::WriteFuture<Message> {
        if records.iter().any(|m| m.payload == "poison") {
            return Box::pin(std::future::ready(Err("poisoned".into())));
        }
        sluice::SinkWriter::write(&mut self.0, epoch, records)
    }
}

#[test]
fn acknowledged_records_count_only_durable_epochs() {
    let run = |input: String| {
        let source = StdinSource::from_reader(InputFormat::Text, io::Cursor::new(input));
        let sink = Poisoned::default();
        let (s, o) = (source.clone(), sink.clone());
        let result = Pipeline::new("stdin-acks")
            .epoch_bounds(sluice::EpochBounds {
                max_records: 10,
                ..Default::default()
            })
            // one epoch at a time: every durable epoch is acknowledged before the next is read
            .in_flight_bounds(sluice::InFlightBounds {
                max_epochs: 1,
                ..Default::default()
            })
            .run(move |p| {
                let mut dl = p.dead_letters();
                p.read_with_failures("read", s.clone())
                    .failures_to(&mut dl)
                    .write("write", o.clone());
                dl.write("dead_letters", MemorySink::new());
                Ok(())
            });
        (result, source.acknowledged_records(), sink.0.len() as u64)
    };
    let lines: Vec<String> = (0..100).map(|i| format!("line {i}\n")).collect();
    let (result, acked, written) = run(lines.concat());
    assert!(result.is_ok());
    assert_eq!((acked, written), (100, 100));

    let mut poisoned = lines.clone();
    poisoned[64] = "poison\n".to_string();
    let (result, acked, written) = run(poisoned.concat());
    assert!(result.is_err());
    assert_eq!(
        acked, written,
        "exactly the durable records are acknowledged"
    );
    assert!(acked <= 64, "{acked}");
}

#[test]
fn gzipped_and_heka_input() {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b"one\ntwo\n").unwrap();
    let (out, _) = read(InputFormat::Text, io::Cursor::new(gz.finish().unwrap()), 1).unwrap();
    assert_eq!(out, vec![Message::new("one"), Message::new("two")]);

    let m = Message::new("{}").with_attribute("uri", "/submit/x");
    let mut stream = encode_frame(&message_to_heka(&m).unwrap());
    stream.extend_from_slice(b"junk");
    stream.extend(encode_frame(&message_to_heka(&m).unwrap()));
    let (out, dead) = read(InputFormat::Heka, io::Cursor::new(stream), 2).unwrap();
    assert_eq!(out, vec![m.clone(), m]);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].original.payload, "junk");
}

/// A reader fed line by line by another thread: reads block until data comes, as stdin does.
struct Fed(mpsc::Receiver<Vec<u8>>, Vec<u8>);
impl Read for Fed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.1.is_empty() {
            match self.0.recv() {
                Ok(b) => self.1 = b,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.1.len());
        buf[..n].copy_from_slice(&self.1[..n]);
        self.1.drain(..n);
        Ok(n)
    }
}

#[test]
fn a_slow_input_wakes_the_source_and_ends_at_eof() {
    let (tx, rx) = mpsc::channel();
    let feeder = std::thread::spawn(move || {
        for i in 0..50 {
            tx.send(format!("line {i}\n").into_bytes()).unwrap();
            if i % 10 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    });
    let (out, dead) = read(InputFormat::Text, Fed(rx, Vec::new()), 2).unwrap();
    feeder.join().unwrap();
    assert_eq!(out.len(), 50);
    assert!(dead.is_empty());
}

struct Failing(usize);
impl Read for Failing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0 == 0 {
            return Err(io::Error::other("descriptor gone"));
        }
        self.0 -= 1;
        let line = b"ok\n";
        buf[..line.len()].copy_from_slice(line);
        Ok(line.len())
    }
}

#[test]
fn a_read_error_fails_the_run_with_its_reason() {
    let Err(e) = read(InputFormat::Text, Failing(3), 1) else {
        panic!("a failing input must fail the run")
    };
    let e = sluice::chain(&e);
    assert!(
        e.contains("cannot read reader after line 3: descriptor gone"),
        "{e}"
    );
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);
impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn write_with(format: OutputFormat, workers: usize, records: Vec<Message>) -> Vec<u8> {
    let buf = Shared::default();
    let b = buf.clone();
    let sink = WriterSink::new(
        "memory",
        format,
        Arc::new(move || Ok(Box::new(b.clone()) as Box<dyn Write + Send>)),
    );
    Pipeline::new("write-test")
        .workers(workers)
        .run(move |p| {
            p.read("read", MemorySource::from(records.clone()))
                .write("write", sink.clone());
            Ok(())
        })
        .unwrap();
    let out = buf.0.lock().unwrap().clone();
    out
}

#[test]
fn writer_sink_writes_every_record_in_its_format() {
    let records: Vec<Message> = (0..1000)
        .map(|i| Message::new(format!("{{\"i\":{i}}}")).with_attribute("n", i.to_string()))
        .collect();
    for workers in [1, 2] {
        let json = write_with(OutputFormat::Json, workers, records.clone());
        let mut back: Vec<Message> = json
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| Message::from_json_line(l).unwrap())
            .collect();
        back.sort();
        let mut expected = records.clone();
        expected.sort();
        assert_eq!(back, expected, "json is replayable");

        let decoded = write_with(OutputFormat::Decoded, workers, records.clone());
        let mut lines: Vec<&[u8]> = decoded.split(|b| *b == b'\n').collect();
        assert_eq!(lines.pop(), Some(&b""[..]), "ends with a newline");
        let mut lines: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        lines.sort_by_key(|v| v["i"].as_u64());
        assert_eq!(lines.len(), 1000);
        assert_eq!(lines[999]["i"], 999);
    }
    assert_eq!(
        write_with(
            OutputFormat::Text,
            1,
            vec![Message::new("x").with_attribute("a", "b")]
        ),
        b"x\n"
    );
}

struct Broken;
impl Write for Broken {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(io::ErrorKind::BrokenPipe, "pipe closed"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_write_error_fails_the_run() {
    let sink = WriterSink::new(
        "stdout",
        OutputFormat::Json,
        Arc::new(|| Ok(Box::new(Broken) as Box<dyn Write + Send>)),
    );
    let e = Pipeline::new("broken")
        .run(move |p| {
            p.read("read", MemorySource::from(vec![Message::new("a")]))
                .write("write", sink.clone());
            Ok(())
        })
        .unwrap_err();
    let e = sluice::chain(&e);
    assert!(e.contains("cannot write to stdout: pipe closed"), "{e}");
}

const CHILD: &str = "SLUICE_STDIO_CHILD";

/// Run in a child process (see below): stdin (json) -> stdout (json), dead letters -> stderr.
#[test]
fn child_stdin_to_stdout() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    Pipeline::new("child")
        .workers(2)
        .stack_traces(false)
        .run(|p| {
            let mut dl = p.dead_letters();
            p.read_with_failures("read", StdinSource::new(InputFormat::Json))
                .failures_to(&mut dl)
                .write("write", StdoutSink::new(OutputFormat::Json));
            dl.write_messages("dead_letters", StderrSink::new(OutputFormat::Json));
            Ok(())
        })
        .unwrap();
}

#[test]
fn real_stdin_and_stdout_in_a_child_process() {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "child_stdin_to_stdout",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let messages: Vec<Message> = (0..300)
        .map(|i| Message::new(format!("p{i}")).with_attribute("i", i.to_string()))
        .collect();
    let mut input = String::new();
    for m in &messages {
        input.push_str(&m.to_json_line());
        input.push('\n');
    }
    input.push_str("garbage line\n");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // the test harness prints its own lines too: keep the envelopes
    let envelopes = |bytes: &[u8]| -> Vec<Message> {
        let mut v: Vec<Message> = bytes
            .split(|b| *b == b'\n')
            .filter_map(|l| {
                let start = l.windows(15).position(|w| w == b"{\"attributeMap\"")?;
                Some(Message::from_json_line(&l[start..]).unwrap())
            })
            .collect();
        v.sort();
        v
    };
    let mut expected = messages;
    expected.sort();
    assert_eq!(envelopes(&output.stdout), expected);
    let dead = envelopes(&output.stderr);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].payload, "garbage line");
    assert_eq!(dead[0].attribute("error_type"), Some(READ_INPUT_ERROR_TYPE));
    assert_eq!(dead[0].attribute("input_line"), Some("301"));
    assert_eq!(dead[0].attribute("input_type"), Some("stdin"));
}

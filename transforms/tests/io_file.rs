//! The file source in whole pipelines: real files in temp dirs, 1 and 2 workers.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use proptest::prelude::*;
use sluice::{DeadLetter, MemorySink, Message, Pipeline};
use sluice_schemas::heka::{encode_frame, message_to_heka};
use sluice_transforms::io::file::FileSource;
use sluice_transforms::io::format::{InputFormat, READ_INPUT_ERROR_TYPE};

struct Run {
    output: Vec<Message>,
    dead: Vec<DeadLetter>,
}

fn run(source: FileSource, workers: usize) -> sluice::Result<Run> {
    let (out, dead) = (MemorySink::new(), MemorySink::new());
    let (o, d) = (out.clone(), dead.clone());
    Pipeline::new("io-file-test")
        .workers(workers)
        .stack_traces(false)
        .run(move |p| {
            let mut dead_letters = p.dead_letters();
            p.read_with_failures("read", source.clone())
                .failures_to(&mut dead_letters)
                .write("write", o.clone());
            dead_letters.write("dead_letters", d.clone());
            Ok(())
        })?;
    Ok(Run {
        output: out.sorted(),
        dead: dead.sorted(),
    })
}

fn envelope(i: usize) -> String {
    Message::new(format!("payload {i}"))
        .with_attribute("n", i.to_string())
        .to_json_line()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn pattern(dir: &Path, glob: &str) -> String {
    dir.join(glob).display().to_string()
}

/// Three json files (one gzipped) with blank and bad lines.
fn json_files(dir: &Path) {
    let a = format!(
        "{}\n{}\n\nnot json\n{}\n",
        envelope(0),
        envelope(1),
        envelope(2)
    );
    std::fs::write(dir.join("a.ndjson"), a).unwrap();
    let b = format!(
        "{}\r\n{{\"payload\":\"***\"}}\n{}",
        envelope(3),
        envelope(4)
    );
    std::fs::write(dir.join("b.ndjson.gz"), gzip(b.as_bytes())).unwrap();
    let c = format!("\n\n{}\n", envelope(5));
    std::fs::write(dir.join("c.ndjson"), c).unwrap();
    std::fs::write(dir.join("ignored.txt"), "not matched\n").unwrap();
}

#[test]
fn json_files_every_line_once_with_one_and_two_workers() {
    let dir = tempfile::tempdir().unwrap();
    json_files(dir.path());
    for workers in [1, 2] {
        let source = FileSource::glob(pattern(dir.path(), "*.ndjson*"), InputFormat::Json);
        let r = run(source.clone(), workers).unwrap();
        let n: Vec<_> = r.output.iter().map(|m| m.attribute("n").unwrap()).collect();
        let mut n: Vec<usize> = n.iter().map(|s| s.parse().unwrap()).collect();
        n.sort();
        assert_eq!(n, vec![0, 1, 2, 3, 4, 5], "workers {workers}");
        assert_eq!(r.dead.len(), 2);

        let by_payload: BTreeMap<_, _> = r
            .dead
            .iter()
            .map(|d| (String::from_utf8(d.original.payload.to_vec()).unwrap(), d))
            .collect();
        let bad = by_payload["not json"];
        assert_eq!(bad.error_type, READ_INPUT_ERROR_TYPE);
        assert_eq!(bad.input_type.as_deref(), Some("file"));
        assert_eq!(bad.job_name.as_deref(), Some("io-file-test"));
        assert_eq!(bad.source_position["input_line"], "4");
        assert!(bad.source_position["input_file"].ends_with("a.ndjson"));
        assert!(bad
            .error_message
            .starts_with("line is not a message envelope"));
        assert!(bad
            .exception_class
            .ends_with("io::format::FormatError::InvalidEnvelope"));

        let b64 = by_payload["{\"payload\":\"***\"}"];
        assert_eq!(b64.source_position["input_line"], "2");
        assert!(b64.source_position["input_file"].ends_with("b.ndjson.gz"));

        // every file is acknowledged to its end once the run completes
        let checkpoints = source.checkpoints().all();
        assert_eq!(checkpoints.len(), 3);
        assert!(checkpoints.values().all(|c| c.complete));
        let a = dir.path().join("a.ndjson");
        assert_eq!(source.checkpoints().get(&a).unwrap().lines, 5);
    }
}

#[test]
fn good_messages_carry_their_position() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.txt"), "\nfirst\nsecond\n").unwrap();
    let src = FileSource::glob(pattern(dir.path(), "x.txt"), InputFormat::Text);
    let r = run(src, 1).unwrap();
    let positions: Vec<_> = r
        .output
        .iter()
        .map(|m| {
            let p = m.position.as_ref().expect("a position").to_attributes();
            assert!(p["input_file"].ends_with("x.txt"));
            p["input_line"].clone()
        })
        .collect();
    assert_eq!(positions, ["2", "3"]);
    assert!(r.output.iter().all(|m| m.attributes.is_empty()));
}

#[test]
fn text_files_from_a_list_of_paths_and_patterns() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    for f in 0..5 {
        let lines: Vec<String> = (0..300).map(|i| format!("file {f} line {i}")).collect();
        expected.extend(lines.iter().cloned());
        let text = lines.join("\n") + "\n";
        if f % 2 == 0 {
            std::fs::write(
                dir.path().join(format!("{f}.log.gz")),
                gzip(text.as_bytes()),
            )
            .unwrap();
        } else {
            std::fs::write(dir.path().join(format!("{f}.log")), text).unwrap();
        }
    }
    expected.sort();
    let inputs = vec![
        pattern(dir.path(), "1.log"),
        pattern(dir.path(), "*.log*"), // overlaps: each file is read once
    ];
    for workers in [1, 2] {
        let r = run(FileSource::new(inputs.clone(), InputFormat::Text), workers).unwrap();
        let mut got: Vec<String> = r
            .output
            .iter()
            .map(|m| String::from_utf8(m.payload.to_vec()).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, expected);
        assert!(r.dead.is_empty());
    }
}

#[test]
fn heka_files_lose_no_good_frame_around_broken_ones() {
    let dir = tempfile::tempdir().unwrap();
    let good: Vec<Message> = (0..20)
        .map(|i| {
            Message::new(format!("{{\"i\":{i}}}"))
                .with_attribute("uri", format!("/submit/test/test/1/{i}"))
                .with_attribute("user_agent", "test")
        })
        .collect();
    let frame = |m: &Message| encode_frame(&message_to_heka(m).unwrap());
    let mut stream = Vec::new();
    for m in &good[..10] {
        stream.extend(frame(m));
    }
    let garbage_at = stream.len();
    stream.extend_from_slice(b"\x00garbage bytes");
    let cut = frame(&Message::new("cut short"));
    stream.extend_from_slice(&cut[..cut.len() - 5]);
    for m in &good[10..] {
        stream.extend(frame(m));
    }
    std::fs::write(dir.path().join("a.heka"), &stream).unwrap();
    std::fs::write(dir.path().join("b.heka.gz"), gzip(&stream)).unwrap();

    for workers in [1, 2] {
        let r = run(
            FileSource::glob(pattern(dir.path(), "*.heka*"), InputFormat::Heka),
            workers,
        )
        .unwrap();
        let mut expected: Vec<Message> = good.iter().chain(&good).cloned().collect();
        expected.sort();
        assert_eq!(r.output, expected);
        // the garbage and the cut frame: one or two broken stretches per file, no byte lost
        let raw: usize = r.dead.iter().map(|d| d.original.payload.len()).sum();
        let good_len: usize = good.iter().map(|m| frame(m).len()).sum();
        assert_eq!(raw, 2 * (stream.len() - good_len));
        assert!(r.dead.iter().all(|d| d.error_type == READ_INPUT_ERROR_TYPE));
        assert!(r
            .dead
            .iter()
            .any(|d| d.source_position["input_offset"] == garbage_at.to_string()));
        // the garbage and the cut frame right after it are one broken stretch: one dead
        // letter per file, at the garbage's offset (the cut frame decodes into the next
        // frame's bytes, which the decoder detects: no good frame is lost, as checked above)
        assert_eq!(r.dead.len(), 2, "one dead letter per file");
        assert!(r
            .dead
            .iter()
            .all(|d| d.source_position["input_offset"] == garbage_at.to_string()));
        assert!(r
            .dead
            .iter()
            .all(|d| d.exception_class.ends_with("FormatError::BrokenStretch")));
    }
}

#[test]
fn a_heka_message_without_content_is_a_dead_letter_with_its_frame() {
    let dir = tempfile::tempdir().unwrap();
    let no_content = sluice_schemas::heka::HekaMessage {
        uuid: vec![9; 16],
        ..Default::default()
    };
    let ok = message_to_heka(&Message::new("ok")).unwrap();
    let mut stream = encode_frame(&no_content);
    stream.extend(encode_frame(&ok));
    std::fs::write(dir.path().join("a.heka"), &stream).unwrap();
    let r = run(
        FileSource::glob(pattern(dir.path(), "a.heka"), InputFormat::Heka),
        1,
    )
    .unwrap();
    assert_eq!(r.output, vec![Message::new("ok")]);
    assert_eq!(r.dead.len(), 1);
    assert_eq!(r.dead[0].original.payload, encode_frame(&no_content));
    assert_eq!(r.dead[0].source_position["input_offset"], "0");
    assert!(r.dead[0]
        .exception_class
        .ends_with("FormatError::InvalidHeka"));
}

#[test]
fn a_pattern_matching_nothing_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = pattern(dir.path(), "*.ndjson");
    let source = FileSource::glob(&p, InputFormat::Json);
    let expected = format!("input file pattern {p:?} matches no file");
    assert_eq!(source.resolve().unwrap_err().to_string(), expected);
    let Err(e) = run(source, 2) else {
        panic!("a run without input files must fail")
    };
    assert!(sluice::chain(&e).contains(&expected), "{e}");
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("here.ndjson"), "").unwrap();
    let missing = pattern(dir.path(), "missing.ndjson");
    let source = FileSource::new(
        [pattern(dir.path(), "here.ndjson"), missing.clone()],
        InputFormat::Json,
    );
    let e = sluice::chain(&source.resolve().unwrap_err());
    assert!(
        e.starts_with(&format!("cannot open input file {missing}: ")),
        "{e}"
    );
    let Err(e) = run(source, 1) else {
        panic!("a run with a missing file must fail")
    };
    assert!(sluice::chain(&e).contains(&missing), "{e}");
}

#[test]
fn a_broken_gzip_file_is_dead_lettered_from_its_break_and_the_other_files_are_read() {
    for (name, breakage) in [("truncated", 0), ("corrupt", 1)] {
        let dir = tempfile::tempdir().unwrap();
        let lines: String = (0..2000).map(|i| format!("line {i}\n")).collect();
        let mut gz = gzip(lines.as_bytes());
        let n = gz.len();
        if breakage == 0 {
            gz.truncate(n / 2);
        } else {
            gz[n / 2..].iter_mut().for_each(|b| *b = 0xAA);
        }
        std::fs::write(dir.path().join("b.txt.gz"), gz).unwrap();
        std::fs::write(dir.path().join("a.txt"), "a1\na2\n").unwrap();
        std::fs::write(dir.path().join("c.txt"), "c1\n").unwrap();
        for workers in [1, 2] {
            let r = run(
                FileSource::glob(pattern(dir.path(), "*"), InputFormat::Text),
                workers,
            )
            .unwrap_or_else(|e| panic!("{name}: a broken file must not stop the run: {e}"));
            let payloads: Vec<String> = r
                .output
                .iter()
                .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
                .collect();
            for good in ["a1", "a2", "c1", "line 0"] {
                assert!(payloads.iter().any(|p| p == good), "{name}: {good} missing");
            }
            let from_b = payloads.iter().filter(|p| p.starts_with("line ")).count();
            assert!(
                from_b > 0 && from_b < 2000,
                "{name}: the readable lines before the break flow ({from_b})"
            );
            assert_eq!(r.dead.len(), 1, "{name}: the break is one dead letter");
            let dl = &r.dead[0];
            assert_eq!(dl.error_type, READ_INPUT_ERROR_TYPE);
            assert!(
                dl.exception_class.ends_with("FormatError::Unreadable"),
                "{name}"
            );
            assert!(dl.source_position["input_file"].ends_with("b.txt.gz"));
            // the break is right after the last line read from the file
            assert_eq!(
                dl.source_position["input_line"],
                (from_b + 1).to_string(),
                "{name}"
            );
            assert!(dl.original.payload.is_empty());
        }
    }
}

#[test]
fn a_file_that_shrinks_while_read_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shrinks.txt");
    let lines: String = (0..1000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&path, &lines).unwrap();
    let source = FileSource::glob(path.display().to_string(), InputFormat::Text);
    // listed at its full size, then cut to half before it is read
    source.resolve().unwrap();
    std::fs::write(&path, &lines[..lines.len() / 2]).unwrap();
    let Err(e) = run(source, 1) else {
        panic!("a file that shrank must fail the run, not read short")
    };
    let msg = sluice::chain(&e);
    assert!(msg.contains("shrinks.txt"), "{msg}");
    assert!(msg.contains("shrank while being read"), "{msg}");
}

#[test]
fn empty_files_and_empty_gzip_files_give_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.ndjson"), "").unwrap();
    std::fs::write(dir.path().join("b.ndjson.gz"), "").unwrap();
    std::fs::write(dir.path().join("c.ndjson.gz"), gzip(b"")).unwrap();
    let r = run(
        FileSource::glob(pattern(dir.path(), "*"), InputFormat::Json),
        2,
    )
    .unwrap();
    assert!(r.output.is_empty() && r.dead.is_empty());
}

fn line_soup() -> impl Strategy<Value = Vec<String>> {
    let line = prop_oneof![
        (any::<Vec<u8>>(), any::<BTreeMap<String, String>>())
            .prop_map(|(p, a)| Message::new(p).with_attributes(a).to_json_line()),
        "[ \t]{0,3}".prop_map(String::from),    // blank
        "[^\n\r]{1,40}".prop_map(String::from), // garbage, mostly
        Just("{\"payload\":\"not base64!\"}".to_string()),
        Just("{\"attributeMap\":{\"a\":1}}".to_string()),
    ];
    prop::collection::vec(line, 0..40)
}

fn is_blank(line: &str) -> bool {
    line.bytes().all(|b| b.is_ascii_whitespace())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn every_non_blank_line_is_output_or_dead_letter(
        files in prop::collection::vec(line_soup(), 1..4),
        workers in 1usize..3,
        gz in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut non_blank = 0;
        let mut valid = 0;
        for (i, lines) in files.iter().enumerate() {
            non_blank += lines.iter().filter(|l| !is_blank(l)).count();
            valid += lines
                .iter()
                .filter(|l| !is_blank(l) && Message::from_json_line(l.trim_end().as_bytes()).is_ok())
                .count();
            let text = lines.join("\n");
            let name = dir.path().join(format!("{i}.ndjson"));
            if gz && i % 2 == 0 {
                std::fs::write(name.with_extension("ndjson.gz"), gzip(text.as_bytes())).unwrap();
            } else {
                std::fs::write(name, text).unwrap();
            }
        }
        let r = run(FileSource::glob(pattern(dir.path(), "*.ndjson*"), InputFormat::Json), workers).unwrap();
        prop_assert_eq!(r.output.len() + r.dead.len(), non_blank);
        prop_assert_eq!(r.output.len(), valid);
    }
}

#[test]
fn progress_reaches_the_total_size_of_the_files() {
    let dir = tempfile::tempdir().unwrap();
    json_files(dir.path());
    let size: u64 = ["a.ndjson", "b.ndjson.gz", "c.ndjson"]
        .iter()
        .map(|f| std::fs::metadata(dir.path().join(f)).unwrap().len())
        .sum();
    let source = FileSource::glob(pattern(dir.path(), "*.ndjson*"), InputFormat::Json);
    let pipeline = Pipeline::new("progress").workers(2);
    let metrics = pipeline.metrics();
    pipeline
        .run(move |p| {
            let mut dl = p.dead_letters();
            p.read_with_failures("read", source.clone())
                .failures_to(&mut dl)
                .write("write", MemorySink::new());
            dl.write("dead_letters", MemorySink::new());
            Ok(())
        })
        .unwrap();
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.total(sluice::Counter::ProgressTotal), size);
    assert_eq!(snapshot.total(sluice::Counter::ProgressDone), size);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// A file read in splits by any number of workers gives exactly what one worker reading it
    /// whole gives: every record once, with the same positions, the same dead letters.
    #[test]
    fn splits_on_any_workers_read_exactly_what_a_whole_file_read_gives(
        lines in prop::collection::vec(line_soup(), 1..3),
        crlf in any::<bool>(),
        trailing_newline in any::<bool>(),
        split in 1u64..300,
        workers in 1usize..4,
    ) {
        let dir = tempfile::tempdir().unwrap();
        for (i, lines) in lines.iter().enumerate() {
            let mut text = lines.join(if crlf { "\r\n" } else { "\n" });
            if trailing_newline {
                text.push('\n');
            }
            std::fs::write(dir.path().join(format!("{i}.ndjson")), text).unwrap();
        }
        let glob = pattern(dir.path(), "*.ndjson");
        let whole = run(FileSource::glob(&glob, InputFormat::Json).split_bytes(0), 1).unwrap();
        let source = FileSource::glob(&glob, InputFormat::Json).split_bytes(split);
        let split_run = run(source, workers).unwrap();
        prop_assert_eq!(split_run.output, whole.output);
        prop_assert_eq!(split_run.dead, whole.dead);
    }
}

#[test]
fn a_large_plain_file_is_shared_by_the_workers_in_splits_and_a_gzipped_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let text: String = (0..500).map(|i| format!("{}\n", envelope(i))).collect();
    std::fs::write(dir.path().join("a.ndjson"), &text).unwrap();
    std::fs::write(dir.path().join("b.ndjson.gz"), gzip(text.as_bytes())).unwrap();
    let source = FileSource::glob(pattern(dir.path(), "*.ndjson*"), InputFormat::Json)
        .split_bytes(text.len() as u64 / 10);
    // a.ndjson in 10 or 11 splits (each starts at the first line start after a multiple of
    // the split size), b.ndjson.gz whole
    let units = source.unit_count().unwrap();
    assert!((11..=12).contains(&units), "{units}");
    let size = (text.len()
        + std::fs::metadata(dir.path().join("b.ndjson.gz"))
            .unwrap()
            .len() as usize) as u64;
    let pipeline = Pipeline::new("splits").workers(3);
    let metrics = pipeline.metrics();
    let out = MemorySink::new();
    let o = out.clone();
    pipeline
        .run(move |p| {
            let mut dl = p.dead_letters();
            p.read_with_failures("read", source.clone())
                .failures_to(&mut dl)
                .write("write", o.clone());
            dl.write("dead_letters", MemorySink::new());
            Ok(())
        })
        .unwrap();
    assert_eq!(out.len(), 1000);
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.total(sluice::Counter::ProgressTotal), size);
    assert_eq!(snapshot.total(sluice::Counter::ProgressDone), size);
    // every line of a.ndjson once, at its own line number
    let mut lines: Vec<u64> = out
        .records()
        .iter()
        .filter_map(|m| match m.position.as_ref() {
            Some(sluice::SourcePosition::Line {
                file: Some(f),
                line,
            }) if f.ends_with("a.ndjson") => {
                let n: u64 = m.attribute("n").unwrap().parse().unwrap();
                assert_eq!(*line, n + 1);
                Some(n)
            }
            _ => None,
        })
        .collect();
    lines.sort_unstable();
    lines.dedup();
    assert_eq!(lines.len(), 500);
}

/// Reads with `reader` until it is exhausted; the line numbers it gave.
fn drain(reader: &mut dyn sluice::SourceReader<Result<Message, DeadLetter>>) -> Vec<u64> {
    let mut lines = Vec::new();
    loop {
        let mut out = Vec::new();
        let status = reader.read(&mut out, 100).unwrap();
        for record in out {
            let m = record.expect("a valid line");
            match m.position {
                Some(sluice::SourcePosition::Line { line, .. }) => lines.push(line),
                other => panic!("a line position, not {other:?}"),
            }
        }
        if status.state == sluice::ReadState::Exhausted {
            return lines;
        }
    }
}

#[test]
fn a_worker_that_is_ahead_takes_the_splits_the_others_have_not_started() {
    use sluice::Source;
    let dir = tempfile::tempdir().unwrap();
    let text: String = (0..400).map(|i| format!("{}\n", envelope(i))).collect();
    std::fs::write(dir.path().join("a.ndjson"), &text).unwrap();
    let source = FileSource::glob(pattern(dir.path(), "*.ndjson"), InputFormat::Json)
        .split_bytes(text.len() as u64 / 8);
    assert!(source.unit_count().unwrap() >= 8);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let workers = sluice::SourceContext::standalone_workers(runtime.handle().clone(), "t", 2);
    let mut slow = source.open(&workers[1]).unwrap();
    let mut fast = source.open(&workers[0]).unwrap();
    // the slow worker reads one batch of its first split, then the fast one reads everything
    // nobody has started: with a fixed share it would have stopped at half the file
    let mut out = Vec::new();
    slow.read(&mut out, 10).unwrap();
    assert_eq!(out.len(), 10);
    let mut lines: Vec<u64> = out
        .into_iter()
        .map(|r| match r.unwrap().position {
            Some(sluice::SourcePosition::Line { line, .. }) => line,
            other => panic!("a line position, not {other:?}"),
        })
        .collect();
    let fast_lines = drain(fast.as_mut());
    let slow_rest = drain(slow.as_mut());
    assert!(
        fast_lines.len() > 300,
        "the fast worker read {} of 400 lines",
        fast_lines.len()
    );
    // the slow worker only finished the split it had started
    assert!(slow_rest.len() + lines.len() < 100, "{}", slow_rest.len());
    lines.extend(fast_lines);
    lines.extend(slow_rest);
    lines.sort_unstable();
    assert_eq!(lines, (1..=400).collect::<Vec<u64>>(), "every line once");
    // the process's total is reported once, and the done bytes add up to it
    let (fast_done, fast_total) = fast.progress().unwrap();
    let (slow_done, slow_total) = slow.progress().unwrap();
    assert_eq!(fast_total + slow_total, text.len() as u64);
    assert_eq!(fast_done + slow_done, text.len() as u64);
}

//! Bad input files through the built binary: a truncated `.gz` among good files is read up to
//! its break, the break is one dead letter, the other files are read, and the run ends 0.

use std::path::{Path, PathBuf};
use std::process::Command;

mod support;
use sluice_pipelines::generate::Generator;
use support::read_object_lines;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn envelopes(seed: u64, count: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    for r in Generator::new(seed, 0.0).take(count) {
        r.write_json_line(&mut buf);
    }
    buf
}

#[test]
fn a_truncated_gz_among_good_files_is_dead_lettered_from_its_break_and_the_run_ends_0() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, out) = (tmp.path().join("in"), tmp.path().join("out"));
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("a.ndjson"), envelopes(1, 300)).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &envelopes(2, 300)).unwrap();
    let gz = gz.finish().unwrap();
    std::fs::write(input.join("b.ndjson.gz"), &gz[..gz.len() / 2]).unwrap();
    std::fs::write(input.join("c.ndjson"), envelopes(3, 300)).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        // the file source's positions, apart from other tests' and from the repository
        .env("SLUICE_DATA_DIR", tmp.path().join("state"))
        .args([
            "run",
            "../examples/configs/sink-local.toml",
            "--workers",
            "2",
        ])
        .args(["--set", &format!("source.path={}/*", input.display())])
        .args(["--set", &format!("sink.dir={}", out.display())])
        .args(["--set", &format!("dead_letter.dir={}", out.display())])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{log}");
    let mut objects = Vec::new();
    files(&out, &mut objects);
    let lines: Vec<String> = objects
        .iter()
        .flat_map(|p| read_object_lines(p).unwrap())
        .collect();
    let dead: Vec<sluice::Message> = lines
        .iter()
        .map(|l| sluice::Message::from_json_line(l.as_bytes()).unwrap())
        .filter(|m| m.attribute("error_type").is_some())
        .collect();
    assert_eq!(dead.len(), 1, "the break is one dead letter: {dead:?}");
    let d = &dead[0];
    assert_eq!(d.attribute("error_type"), Some("ReadInput"));
    assert!(d.attribute("input_file").unwrap().ends_with("b.ndjson.gz"));
    let break_line: usize = d.attribute("input_line").unwrap().parse().unwrap();
    // every good file whole, and the broken one's lines before the break
    let written = lines.len() - 1;
    assert_eq!(written, 600 + break_line - 1, "{log}");
    assert!(break_line > 1 && break_line <= 300, "{break_line}");
    assert!(log.contains("ReadInput"), "the summary counts it:\n{log}");
}

#[test]
fn two_megabytes_of_separators_in_a_heka_input_are_one_dead_letter() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, out) = (tmp.path().join("in.heka"), tmp.path().join("out"));
    let mut stream = Vec::new();
    for r in Generator::new(4, 0.0).take(20) {
        r.write_heka_frame(&mut stream).unwrap();
    }
    let flood_at = stream.len();
    stream.extend(std::iter::repeat_n(0x1e_u8, 2_000_000));
    for r in Generator::new(5, 0.0).take(5) {
        r.write_heka_frame(&mut stream).unwrap();
    }
    std::fs::write(&input, &stream).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        // the file source's positions, apart from other tests' and from the repository
        .env("SLUICE_DATA_DIR", tmp.path().join("state"))
        .args(["run", "../examples/configs/sink-local.toml"])
        .args(["--set", &format!("source.path={}", input.display())])
        .args(["--set", "source.format=heka"])
        .args(["--set", &format!("sink.dir={}", out.display())])
        .args(["--set", &format!("dead_letter.dir={}", out.display())])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{log}");
    let mut objects = Vec::new();
    files(&out, &mut objects);
    let dead: Vec<sluice::Message> = objects
        .iter()
        .flat_map(|p| read_object_lines(p).unwrap())
        .map(|l| sluice::Message::from_json_line(l.as_bytes()).unwrap())
        .filter(|m| m.attribute("error_type").is_some())
        .collect();
    assert_eq!(dead.len(), 1, "one dead letter for the stretch:\n{log}");
    assert_eq!(
        dead[0].attribute("input_offset"),
        Some(flood_at.to_string().as_str())
    );
    assert_eq!(dead[0].payload.len(), 2_000_000);
}

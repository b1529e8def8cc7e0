//! The decoder job written in code: read the bundled example submissions, decode and validate them
//! against the example schemas, and count outputs per document type and dead letters per error
//! type (`cargo run -p sluice-examples --example decode_file`). Run from the repository root or
//! anywhere: paths are found from this crate's directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use sluice::{MemorySink, Message, Pipeline};
use sluice_schemas::SchemaRegistry;
use sluice_transforms::decode::Decoder;
use sluice_transforms::io::file::FileSource;
use sluice_transforms::io::format::InputFormat;

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let registry = Arc::new(SchemaRegistry::load(root.join("../schemas/json"))?);
    let pattern = root.join("data/*.ndjson").display().to_string();
    let source = FileSource::glob(pattern, InputFormat::Json);
    let decoded = MemorySink::<Message>::new();
    let dead = MemorySink::<Message>::new();
    let (o, d) = (decoded.clone(), dead.clone());
    let summary = Pipeline::new("decoder").workers(2).run(move |p| {
        let mut dead_letters = p.dead_letters();
        p.read_with_failures("read", source.clone())
            .failures_to(&mut dead_letters)
            .rebalance()
            .apply("decode", Decoder::new(registry.clone()))
            .failures_to(&mut dead_letters)
            .write("write", o.clone());
        // dead letters in gcp-ingestion's message form: original payload + error attributes
        dead_letters.write_messages("write_dead_letters", d.clone());
        Ok(())
    })?;

    let mut by_doctype: BTreeMap<String, usize> = BTreeMap::new();
    for m in decoded.records() {
        let key = format!(
            "{}/{}",
            m.attribute("document_namespace").unwrap_or("?"),
            m.attribute("document_type").unwrap_or("?")
        );
        *by_doctype.entry(key).or_default() += 1;
    }
    println!("decoded:");
    for (doctype, n) in by_doctype {
        println!("  {doctype:<32} {n:>6}");
    }
    println!("dead letters:");
    for (error_type, n) in &summary.dead_lettered {
        println!("  {error_type:<32} {n:>6}");
    }
    println!(
        "{} records read, {} decoded, {} dead letters",
        summary.total_read(),
        decoded.len(),
        dead.len()
    );
    Ok(())
}

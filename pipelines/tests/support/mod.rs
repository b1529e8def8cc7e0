//! Helpers shared by the pipelines' tests.

use std::io::Read;
use std::path::Path;

/// The lines of an object written by the object sink (gunzipped when gzipped).
pub fn read_object_lines(path: &Path) -> std::io::Result<Vec<String>> {
    let raw = std::fs::read(path)?;
    let text = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut s = String::new();
        flate2::read::GzDecoder::new(&raw[..]).read_to_string(&mut s)?;
        s
    } else {
        String::from_utf8_lossy(&raw).into_owned()
    };
    Ok(text.lines().map(String::from).collect())
}

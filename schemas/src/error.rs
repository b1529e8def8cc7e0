//! The crate's error type.

use crate::heka::{ConversionError, FrameError};
use crate::{LimitExceeded, ValidationFailure};

/// A `Result` whose error defaults to this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in this crate.
///
/// Loading errors (`Io` to `NotFound`) are configuration errors: a pipeline reports them and
/// stops. The per-record errors (`Validation`, `Limit`, `Frame`, `Conversion`) describe one
/// document or frame and are meant to become dead letters; each also exists as its own type so
/// that a transform can keep it precise.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory could not be read.
    #[error("cannot read `{path}`")]
    Io {
        /// The file, directory or archive (entry) that failed.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The path given to [`SchemaRegistry::load`](crate::SchemaRegistry::load) is neither a
    /// directory nor a `.tar.gz`/`.tgz` file.
    #[error("`{path}` is neither a directory nor a .tar.gz archive of schemas")]
    UnsupportedSource {
        /// The path.
        path: String,
    },
    /// A `*.schema.json` file is not at `<namespace>/<doctype>/<doctype>.<version>.schema.json`.
    #[error("schema file `{file}` is misplaced: {reason}")]
    Layout {
        /// The file.
        file: String,
        /// What is wrong with its place or name.
        reason: String,
    },
    /// A schema file is not valid JSON.
    #[error("schema file `{file}` is not valid json")]
    InvalidJson {
        /// The file.
        file: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A schema declares a `$schema` this crate does not support.
    #[error("schema file `{file}` declares unsupported draft `{uri}` (supported: draft-04, draft-06, draft-07, 2019-09, 2020-12)")]
    UnsupportedDraft {
        /// The file.
        file: String,
        /// The declared `$schema` value.
        uri: String,
    },
    /// A schema does not compile (invalid against its meta-schema, unresolvable `$ref`, bad
    /// regular expression, ...).
    #[error("schema file `{file}` does not compile: {reason}")]
    Compile {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// Two files define the same namespace, doctype and version (after snake_casing).
    #[error("schema `{key}` is defined twice, in `{first}` and `{second}`")]
    Duplicate {
        /// `namespace/doctype.version`.
        key: String,
        /// The first file.
        first: String,
        /// The second file.
        second: String,
    },
    /// A source held no schema at all (usually a wrong path).
    #[error("no schemas found in `{path}`")]
    NoSchemas {
        /// The directory or archive.
        path: String,
    },
    /// Schema files the registry cannot index (misplaced, a template, not JSON, an unknown
    /// draft, not compiling), all of them, when loading strictly or when nothing else loaded.
    #[error("{} schema file(s) in `{path}` cannot be indexed:{}", files.len(), list(files))]
    Unindexable {
        /// The directory or archive.
        path: String,
        /// One error per file, each naming it.
        files: Vec<Error>,
    },
    /// A schema is not in the registry.
    #[error("schema `{namespace}/{doctype}.{version}` not found")]
    NotFound {
        /// The namespace asked for.
        namespace: String,
        /// The doctype asked for.
        doctype: String,
        /// The version asked for.
        version: u32,
    },
    /// A document does not match its schema.
    #[error(transparent)]
    Validation(#[from] ValidationFailure),
    /// A document is too deep or too large to validate.
    #[error(transparent)]
    Limit(#[from] LimitExceeded),
    /// A Heka frame could not be decoded.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A Heka message could not be converted.
    #[error(transparent)]
    Conversion(#[from] ConversionError),
}

impl Error {
    /// The schema file (or archive entry) a loading error is about, if it is about one.
    pub fn file(&self) -> Option<&str> {
        match self {
            Error::Layout { file, .. }
            | Error::InvalidJson { file, .. }
            | Error::UnsupportedDraft { file, .. }
            | Error::Compile { file, .. } => Some(file),
            Error::Io { path, .. } => Some(path),
            _ => None,
        }
    }

    /// The error and its causes on one line, each said once (`a: b: c`).
    pub fn describe(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            out.push_str(": ");
            out.push_str(&s.to_string());
            source = s.source();
        }
        out
    }
}

/// The files of [`Error::Unindexable`], one per line.
fn list(files: &[Error]) -> String {
    files
        .iter()
        .map(|e| format!("\n  {}", e.describe()))
        .collect()
}

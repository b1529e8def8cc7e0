//! Loading, compiling and looking up JSON schemas.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read;
use std::path::{Component, Path};

use jsonschema::Draft;
use serde_json::Value;

use crate::names::{is_snake_case, snake_case};
use crate::split::SplitConfig;
use crate::{Error, Result, ValidationFailure, ValidationIssue};

/// The longest message a [`ValidationIssue`] keeps (messages quote the offending value).
const MAX_MESSAGE_BYTES: usize = 300;

/// One compiled JSON schema, with the name it was loaded under.
pub struct Schema {
    namespace: String,
    doctype: String,
    canonical_namespace: String,
    canonical_doctype: String,
    version: u32,
    source: String,
    json: Value,
    validator: jsonschema::Validator,
    split: Option<SplitConfig>,
}

impl Schema {
    /// Compiles `json`; `source` names it in errors (a file path or archive entry). The
    /// first argument is the namespace and doctype as the repository spells them (they are
    /// snake_cased for lookups).
    ///
    /// The draft is taken from `$schema` (draft-04, -06, -07, 2019-09 or 2020-12); a schema
    /// without `$schema` is read as draft-07, the draft of mozilla-pipeline-schemas. Formats are
    /// asserted in every draft; unknown formats are ignored. References are never fetched.
    fn compile(
        (canonical_namespace, canonical_doctype): (String, String),
        version: u32,
        source: String,
        json: Value,
    ) -> Result<Schema> {
        let draft = match json.get("$schema") {
            None => Draft::Draft7,
            Some(Value::String(uri)) => match Draft::from_schema_uri(uri) {
                Draft::Unknown => {
                    return Err(Error::UnsupportedDraft {
                        file: source,
                        uri: uri.clone(),
                    })
                }
                draft => draft,
            },
            Some(other) => {
                return Err(Error::UnsupportedDraft {
                    file: source,
                    uri: other.to_string(),
                })
            }
        };
        let validator = jsonschema::options()
            .with_draft(draft)
            .should_validate_formats(true)
            .build(&json)
            .map_err(|e| Error::Compile {
                file: source.clone(),
                reason: describe_compile_error(&e),
            })?;
        let split = match json.get("mozPipelineMetadata") {
            Some(pipeline) => {
                SplitConfig::from_pipeline_metadata(pipeline).map_err(|reason| Error::Compile {
                    file: source.clone(),
                    reason: format!("mozPipelineMetadata: {reason}"),
                })?
            }
            None => None,
        };
        Ok(Schema {
            namespace: snake_case(&canonical_namespace),
            doctype: snake_case(&canonical_doctype),
            canonical_namespace,
            canonical_doctype,
            version,
            source,
            json,
            validator,
            split,
        })
    }

    /// The namespace, snake_cased (`org_mozilla_fenix`).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The doctype, snake_cased.
    pub fn doctype(&self) -> &str {
        &self.doctype
    }

    /// The namespace as the repository spells it (its folder name, `org-mozilla-fenix`),
    /// whatever spelling found the schema: the value outputs are partitioned by, so that
    /// `.test.` or `Test` never open a partition of their own.
    pub fn canonical_namespace(&self) -> &str {
        &self.canonical_namespace
    }

    /// The doctype as the repository spells it (its folder name); see
    /// [`Schema::canonical_namespace`].
    pub fn canonical_doctype(&self) -> &str {
        &self.canonical_doctype
    }

    /// The version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Where the schema was loaded from: a file path, or `<archive>:<entry path>`.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The schema document (for BigQuery table-schema derivation, say).
    pub fn as_json(&self) -> &Value {
        &self.json
    }

    /// How documents of this schema are split into several (its
    /// `mozPipelineMetadata.split_config`), if they are.
    pub fn split_config(&self) -> Option<&SplitConfig> {
        self.split.as_ref()
    }

    /// Whether `document` is valid; faster than [`Schema::validate`] when the reason does not
    /// matter.
    pub fn is_valid(&self, document: &Value) -> bool {
        self.validator.is_valid(document)
    }

    /// Validates `document`, reporting the first few issues with their JSON pointers.
    ///
    /// Check untrusted documents with [`check_depth_and_size`](crate::check_depth_and_size)
    /// first: validation recurses along the document where the schema does.
    pub fn validate(&self, document: &Value) -> Result<(), ValidationFailure> {
        if self.validator.is_valid(document) {
            return Ok(());
        }
        let issues = self
            .validator
            .iter_errors(document)
            .take(ValidationFailure::MAX_ISSUES)
            .map(|e| ValidationIssue {
                instance_path: e.instance_path().as_str().to_owned(),
                schema_path: e.schema_path().as_str().to_owned(),
                message: truncate(e.to_string(), MAX_MESSAGE_BYTES),
            })
            .collect();
        match ValidationFailure::new(issues) {
            Some(failure) => Err(failure),
            // is_valid and iter_errors disagree: trust the detailed walk
            None => Ok(()),
        }
    }
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema")
            .field("namespace", &self.namespace)
            .field("doctype", &self.doctype)
            .field("version", &self.version)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

fn describe_compile_error(e: &jsonschema::ValidationError<'_>) -> String {
    let path = e.instance_path().as_str();
    let message = truncate(e.to_string(), MAX_MESSAGE_BYTES);
    if path.is_empty() {
        message
    } else {
        format!("{path}: {message}")
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

/// Every schema of a directory or archive, compiled once, looked up by namespace, doctype and
/// version.
///
/// The layout is `<namespace>/<doctype>/<doctype>.<version>.schema.json`, optionally below one
/// top folder and/or a `schemas/` folder, as in an archive of mozilla-pipeline-schemas
/// (`mozilla-pipeline-schemas-abc123/schemas/telemetry/main/main.4.schema.json`). Other files
/// (README, `.bq`, ...) and hidden files are ignored. Namespaces and doctypes are stored
/// [`snake_case`]d and looked up the same way.
///
/// A `*.schema.json` the registry cannot index — misplaced or misnamed, a template (below a
/// `templates/` folder, as in mozilla-pipeline-schemas), not JSON, of an unknown draft, not
/// compiling — is skipped and listed by [`SchemaRegistry::skipped`], so that one bad file
/// does not stop a job; [`SchemaRegistry::load_strict`] makes them an error listing them all.
/// Unreadable files, two files for one schema and a source without any schema are always
/// errors.
///
/// A registry is immutable once loaded, `Send + Sync`: share it between workers in an `Arc`.
///
/// ```
/// use serde_json::json;
/// use sluice_schemas::SchemaRegistry;
///
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/json");
/// let registry = SchemaRegistry::load(dir)?;
/// assert!(registry.doctype_exists("org-mozilla-fenix", "baseline"));
///
/// let schema = registry.find("test", "test", 1)?;
/// assert!(schema.validate(&json!({"field": "value"})).is_ok());
/// let failure = schema.validate(&json!({"bad": 1})).unwrap_err();
/// assert_eq!(failure.instance_path(), "/bad");
/// assert_eq!(failure.to_string(), "/bad: False schema does not allow 1");
/// assert!(registry.get("test", "test", 99).is_none());
/// # Ok::<(), sluice_schemas::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct SchemaRegistry {
    /// namespace -> doctype -> version -> schema
    schemas: HashMap<String, HashMap<String, BTreeMap<u32, Schema>>>,
    len: usize,
    /// Files that could not be indexed, sorted by file.
    skipped: Vec<Error>,
}

impl SchemaRegistry {
    /// A registry without schemas; fill it with [`SchemaRegistry::add`].
    pub fn empty() -> Self {
        SchemaRegistry::default()
    }

    /// Loads a directory, or a `.tar.gz`/`.tgz` archive, of schemas, skipping the schema files
    /// it cannot index ([`SchemaRegistry::skipped`] lists them; an error if every one was).
    ///
    /// An unreadable file, two files for one schema, or a source without any schema is an
    /// error.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(path.as_ref(), false)
    }

    /// Like [`SchemaRegistry::load`], but a schema file that cannot be indexed is an error:
    /// [`Error::Unindexable`], listing every such file.
    pub fn load_strict(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(path.as_ref(), true)
    }

    fn load_with(path: &Path, strict: bool) -> Result<Self> {
        if path.is_dir() {
            return Self::dir(path, strict);
        }
        let name = path.to_string_lossy();
        if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            let file = std::fs::File::open(path).map_err(|source| Error::Io {
                path: path.display().to_string(),
                source,
            })?;
            return Self::tar_gz(std::io::BufReader::new(file), &name, strict);
        }
        Err(Error::UnsupportedSource {
            path: name.into_owned(),
        })
    }

    /// The schema files that were skipped, each error naming its file, sorted by file.
    pub fn skipped(&self) -> &[Error] {
        &self.skipped
    }

    /// Loads every schema below a directory (see [`SchemaRegistry::load`]).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::dir(dir.as_ref(), false)
    }

    fn dir(dir: &Path, strict: bool) -> Result<Self> {
        let mut registry = SchemaRegistry::empty();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(current) = pending.pop() {
            let entries = std::fs::read_dir(&current).map_err(|source| Error::Io {
                path: current.display().to_string(),
                source,
            })?;
            let mut entries = entries
                .collect::<std::io::Result<Vec<_>>>()
                .map_err(|source| Error::Io {
                    path: current.display().to_string(),
                    source,
                })?;
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let path = entry.path();
                if entry.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                // symbolic links to directories are not followed (no loops)
                let is_dir = entry.file_type().map_err(|source| Error::Io {
                    path: path.display().to_string(),
                    source,
                })?;
                if is_dir.is_dir() {
                    pending.push(path);
                    continue;
                }
                let relative = path.strip_prefix(dir).unwrap_or(&path);
                let file = path.display().to_string();
                let key = match parse_layout(relative, &file) {
                    Ok(Some(key)) => key,
                    Ok(None) => continue,
                    Err(e) => {
                        registry.skipped.push(e);
                        continue;
                    }
                };
                let bytes = std::fs::read(&path).map_err(|source| Error::Io {
                    path: file.clone(),
                    source,
                })?;
                registry.add_file(key, file, &bytes)?;
            }
        }
        registry.finish(dir.display().to_string(), strict)
    }

    /// Loads every schema of a gzipped tar archive file (see [`SchemaRegistry::load`]).
    pub fn from_tar_gz(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_tar_gz_reader(std::io::BufReader::new(file), &path.display().to_string())
    }

    /// Loads every schema of a gzipped tar archive read from `reader` (a download, say);
    /// `name` stands for the archive in error messages (see [`SchemaRegistry::load`]).
    pub fn from_tar_gz_reader(reader: impl Read, name: &str) -> Result<Self> {
        Self::tar_gz(reader, name, false)
    }

    fn tar_gz(reader: impl Read, name: &str, strict: bool) -> Result<Self> {
        let io_error = |entry: &str, source| Error::Io {
            path: if entry.is_empty() {
                name.to_owned()
            } else {
                format!("{name}:{entry}")
            },
            source,
        };
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
        let mut registry = SchemaRegistry::empty();
        for entry in archive.entries().map_err(|e| io_error("", e))? {
            let mut entry = entry.map_err(|e| io_error("", e))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let entry_path = entry.path().map_err(|e| io_error("", e))?.into_owned();
            let file = format!("{name}:{}", entry_path.display());
            if hidden(&entry_path) {
                continue;
            }
            let key = match parse_layout(&entry_path, &file) {
                Ok(Some(key)) => key,
                Ok(None) => continue,
                Err(e) => {
                    registry.skipped.push(e);
                    continue;
                }
            };
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| io_error(&entry_path.display().to_string(), e))?;
            registry.add_file(key, file, &bytes)?;
        }
        registry.finish(name.to_owned(), strict)
    }

    /// Compiles and adds one schema (names are snake_cased for lookups, and kept as given as
    /// its canonical names); an error if it does not compile or its namespace, doctype and
    /// version are taken. For tests and schemas built in code.
    pub fn add(&mut self, namespace: &str, doctype: &str, version: u32, json: Value) -> Result<()> {
        let source = format!("{namespace}/{doctype}/{doctype}.{version}.schema.json (in memory)");
        self.insert(Schema::compile(
            (namespace.to_owned(), doctype.to_owned()),
            version,
            source,
            json,
        )?)
    }

    /// Indexes one file; one that cannot be indexed is recorded as skipped.
    fn add_file(&mut self, key: LayoutKey, file: String, bytes: &[u8]) -> Result<()> {
        let json: Value = match serde_json::from_slice(bytes) {
            Ok(json) => json,
            Err(source) => {
                self.skipped.push(Error::InvalidJson { file, source });
                return Ok(());
            }
        };
        match Schema::compile((key.namespace, key.doctype), key.version, file, json) {
            Ok(schema) => self.insert(schema),
            Err(e) => {
                self.skipped.push(e);
                Ok(())
            }
        }
    }

    /// The registry, or the error: files skipped in strict mode, or nothing loaded.
    fn finish(mut self, path: String, strict: bool) -> Result<Self> {
        self.skipped.sort_by(|a, b| {
            a.file()
                .unwrap_or_default()
                .cmp(b.file().unwrap_or_default())
        });
        if !self.skipped.is_empty() && (strict || self.is_empty()) {
            return Err(Error::Unindexable {
                path,
                files: std::mem::take(&mut self.skipped),
            });
        }
        self.non_empty(path)
    }

    fn insert(&mut self, schema: Schema) -> Result<()> {
        let versions = self
            .schemas
            .entry(schema.namespace.clone())
            .or_default()
            .entry(schema.doctype.clone())
            .or_default();
        if let Some(existing) = versions.get(&schema.version) {
            return Err(Error::Duplicate {
                key: format!("{}/{}.{}", schema.namespace, schema.doctype, schema.version),
                first: existing.source.clone(),
                second: schema.source,
            });
        }
        versions.insert(schema.version, schema);
        self.len += 1;
        Ok(())
    }

    fn non_empty(self, path: String) -> Result<Self> {
        if self.is_empty() {
            Err(Error::NoSchemas { path })
        } else {
            Ok(self)
        }
    }

    fn versions_of(&self, namespace: &str, doctype: &str) -> Option<&BTreeMap<u32, Schema>> {
        let doctypes = if is_snake_case(namespace) {
            self.schemas.get(namespace)
        } else {
            self.schemas.get(&snake_case(namespace))
        }?;
        if is_snake_case(doctype) {
            doctypes.get(doctype)
        } else {
            doctypes.get(&snake_case(doctype))
        }
    }

    /// The schema of `namespace`/`doctype` at `version` (names are snake_cased first).
    pub fn get(&self, namespace: &str, doctype: &str, version: u32) -> Option<&Schema> {
        self.versions_of(namespace, doctype)?.get(&version)
    }

    /// Like [`SchemaRegistry::get`], with an [`Error::NotFound`] naming what was asked for.
    pub fn find(&self, namespace: &str, doctype: &str, version: u32) -> Result<&Schema> {
        self.get(namespace, doctype, version)
            .ok_or_else(|| Error::NotFound {
                namespace: namespace.to_owned(),
                doctype: doctype.to_owned(),
                version,
            })
    }

    /// Whether any version of `namespace`/`doctype` exists (names are snake_cased first).
    pub fn doctype_exists(&self, namespace: &str, doctype: &str) -> bool {
        self.versions_of(namespace, doctype)
            .is_some_and(|v| !v.is_empty())
    }

    /// The versions of `namespace`/`doctype`, ascending (empty if it does not exist).
    pub fn versions(&self, namespace: &str, doctype: &str) -> impl Iterator<Item = u32> + '_ {
        self.versions_of(namespace, doctype)
            .into_iter()
            .flat_map(|v| v.keys().copied())
    }

    /// Every schema, sorted by namespace, doctype and version.
    pub fn iter(&self) -> impl Iterator<Item = &Schema> + '_ {
        let mut all: Vec<&Schema> = self
            .schemas
            .values()
            .flat_map(|d| d.values())
            .flat_map(|v| v.values())
            .collect();
        all.sort_by(|a, b| {
            (&a.namespace, &a.doctype, a.version).cmp(&(&b.namespace, &b.doctype, b.version))
        });
        all.into_iter()
    }

    /// The number of schemas.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no schema.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Where a schema file says it belongs, before snake_casing.
#[derive(Debug, PartialEq, Eq)]
struct LayoutKey {
    namespace: String,
    doctype: String,
    version: u32,
}

fn hidden(path: &Path) -> bool {
    path.components().any(|c| match c {
        Component::Normal(s) => s.to_string_lossy().starts_with('.'),
        _ => false,
    })
}

/// Parses `relative` (a path below the loaded root): `None` for files that are not schemas,
/// an error for a `*.schema.json` out of place.
fn parse_layout(relative: &Path, file: &str) -> Result<Option<LayoutKey>> {
    let Some(name) = relative.file_name().map(|n| n.to_string_lossy()) else {
        return Ok(None);
    };
    let Some(stem) = name.strip_suffix(".schema.json") else {
        return Ok(None);
    };
    let layout_error = |reason: &str| Error::Layout {
        file: file.to_owned(),
        reason: reason.to_owned(),
    };
    let mut parts = Vec::new();
    for component in relative.components() {
        match component {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => return Err(layout_error("the path must be relative, without `..`")),
        }
    }
    const EXPECTED: &str =
        "expected [<top>/][schemas/]<namespace>/<doctype>/<doctype>.<version>.schema.json";
    if parts.len() < 3 {
        return Err(layout_error(EXPECTED));
    }
    let prefix = &parts[..parts.len() - 3];
    if prefix.iter().any(|p| p == "templates") {
        return Err(layout_error(
            "a template (below `templates/`), not a schema: load the generated `schemas/`",
        ));
    }
    let prefix_ok = match prefix {
        [] => true,
        [_top] => true,
        [_top, schemas] => schemas == "schemas",
        _ => false,
    };
    if !prefix_ok {
        return Err(layout_error(EXPECTED));
    }
    let namespace = &parts[parts.len() - 3];
    let doctype_dir = &parts[parts.len() - 2];
    let Some((doctype, version)) = stem.rsplit_once('.') else {
        return Err(layout_error(
            "the file name must be <doctype>.<version>.schema.json",
        ));
    };
    let Ok(version) = version.parse::<u32>() else {
        return Err(layout_error(&format!(
            "version `{version}` is not a non-negative integer"
        )));
    };
    if doctype != doctype_dir {
        return Err(layout_error(&format!(
            "doctype `{doctype}` in the file name differs from its folder `{doctype_dir}`"
        )));
    }
    Ok(Some(LayoutKey {
        namespace: namespace.clone(),
        doctype: doctype.to_owned(),
        version,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, dt: &str, v: u32) -> Option<LayoutKey> {
        Some(LayoutKey {
            namespace: ns.into(),
            doctype: dt.into(),
            version: v,
        })
    }

    #[test]
    fn layouts() {
        let ok = |p: &str| parse_layout(Path::new(p), p).unwrap();
        assert_eq!(
            ok("telemetry/main/main.4.schema.json"),
            key("telemetry", "main", 4)
        );
        assert_eq!(
            ok("schemas/telemetry/main/main.4.schema.json"),
            key("telemetry", "main", 4)
        );
        assert_eq!(
            ok("mps-abc123/schemas/org-mozilla-fenix/baseline/baseline.1.schema.json"),
            key("org-mozilla-fenix", "baseline", 1)
        );
        assert_eq!(
            ok("./telemetry/main/main.4.schema.json"),
            key("telemetry", "main", 4)
        );
        assert_eq!(ok("README.md"), None);
        assert_eq!(ok("telemetry/main/main.4.bq"), None);
        assert_eq!(ok("a/b/c/d/notes.txt"), None);
    }

    #[test]
    fn misplaced_schemas_are_errors() {
        for p in [
            "main.4.schema.json",
            "main/main.4.schema.json",
            "a/b/telemetry/main/main.4.schema.json",
            "top/other/telemetry/main/main.4.schema.json",
            "telemetry/main/event.4.schema.json",
            "telemetry/main/main.schema.json",
            "telemetry/main/main.x.schema.json",
            "telemetry/main/main.-1.schema.json",
        ] {
            let err = parse_layout(Path::new(p), p).unwrap_err();
            assert!(
                matches!(err, Error::Layout { ref file, .. } if file == p),
                "{p}: {err}"
            );
        }
    }

    #[test]
    fn truncate_is_utf8_safe() {
        assert_eq!(truncate("héllo".into(), 2), "h...");
        assert_eq!(truncate("abc".into(), 3), "abc");
    }
}

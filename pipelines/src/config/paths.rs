//! Relative paths in a config file are relative to the file's folder, so a job runs the same
//! from any working directory. Which keys are paths comes from the config reference (keys of
//! type `path` or `path or glob`); values given by `--set` or the environment are not
//! rewritten: they are relative to the working directory, as on any command line.

use std::path::{Path, PathBuf};

use sluice_transforms::config_doc::{ty, Documented, Key};
use toml::Value;

use super::model::{JobConfig, SinkConfig, SourceConfig};

/// Rewrites every relative path of `root` (a config file's tree) as `base` joined with it.
pub(super) fn resolve_relative_paths(root: &mut toml::Table, base: &Path) {
    if base.as_os_str().is_empty() {
        return;
    }
    resolve_table(root, <JobConfig as Documented>::KEYS, base);
    if let Some(Value::Table(t)) = root.get_mut("source") {
        resolve_tagged(t, SourceConfig::keys_of, base);
    }
    for section in ["sink", "dead_letter"] {
        if let Some(Value::Table(t)) = root.get_mut(section) {
            resolve_tagged(t, SinkConfig::keys_of, base);
        }
    }
    if let Some(Value::Array(routes)) = root.get_mut("routes") {
        for route in routes {
            if let Some(Value::Table(t)) = route.get_mut("sink") {
                resolve_tagged(t, SinkConfig::keys_of, base);
            }
        }
    }
}

fn resolve_tagged(
    table: &mut toml::Table,
    keys_of: fn(&str) -> Option<&'static [Key]>,
    base: &Path,
) {
    let kind = table
        .get("type")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(keys) = kind.as_deref().and_then(keys_of) {
        resolve_table(table, keys, base);
    }
}

fn resolve_table(table: &mut toml::Table, keys: &[Key], base: &Path) {
    for key in keys {
        let Some(value) = table.get_mut(key.name) else {
            continue;
        };
        match (value, key.table) {
            (Value::String(s), _)
                if key.is_path() && !s.is_empty() && Path::new(s.as_str()).is_relative() =>
            {
                // a glob's folder is matched literally: `[`, `*` and `?` in it are escaped
                let base = match base.to_str() {
                    Some(b) if key.ty == ty::GLOB => PathBuf::from(glob::Pattern::escape(b)),
                    _ => base.to_path_buf(),
                };
                if let Some(joined) = base.join(s.as_str()).to_str() {
                    *s = joined.to_string();
                }
            }
            (Value::Table(t), Some(sub)) => resolve_table(t, sub(), base),
            (Value::Array(items), Some(sub)) => {
                for item in items {
                    if let Value::Table(t) = item {
                        resolve_table(t, sub(), base);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_path_keys_join_the_base_and_nothing_else_changes() {
        let mut root: toml::Table = toml::from_str(
            r#"
job = "decoder"
[source]
type = "file"
path = "../data/*.ndjson"
state_dir = "/var/state"
[decoder]
schemas = "schemas/json"
geo_city_database = "geo/city.mmdb"
[sink]
type = "file"
dir = "out"
path = "raw/"
[dead_letter]
type = "stderr"
[[routes]]
name = "r"
sink = { type = "file", dir = "routed", path = "x/" }
"#,
        )
        .unwrap();
        resolve_relative_paths(&mut root, Path::new("conf"));
        let at = |path: &[&str]| {
            let mut v = root.get(path[0]).unwrap();
            for p in &path[1..] {
                v = v.get(p).unwrap();
            }
            v.as_str().unwrap().to_string()
        };
        assert_eq!(at(&["source", "path"]), "conf/../data/*.ndjson");
        assert_eq!(at(&["source", "state_dir"]), "/var/state");
        assert_eq!(at(&["decoder", "schemas"]), "conf/schemas/json");
        assert_eq!(at(&["decoder", "geo_city_database"]), "conf/geo/city.mmdb");
        assert_eq!(at(&["sink", "dir"]), "conf/out");
        // an object key prefix is no filesystem path
        assert_eq!(at(&["sink", "path"]), "raw/");
        let route = &root["routes"].as_array().unwrap()[0];
        assert_eq!(route["sink"]["dir"].as_str(), Some("conf/routed"));
        assert_eq!(route["sink"]["path"].as_str(), Some("x/"));
    }

    #[test]
    fn a_folder_named_like_a_pattern_is_matched_literally() {
        let mut root: toml::Table = toml::from_str(
            "[source]\ntype = \"file\"\npath = \"*.ndjson\"\n[decoder]\nschemas = \"s\"",
        )
        .unwrap();
        resolve_relative_paths(&mut root, Path::new("conf[1]"));
        assert_eq!(
            root["source"]["path"].as_str(),
            Some("conf[[]1[]]/*.ndjson")
        );
        assert_eq!(root["decoder"]["schemas"].as_str(), Some("conf[1]/s"));
    }
}

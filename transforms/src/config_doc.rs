//! The config reference, kept beside the config structs: each struct a config file reaches
//! lists its keys ([`Documented::KEYS`]) with their type, default and a one-line description.
//! `sluice config reference` renders them; [`check_documented`] (run by each struct's tests)
//! fails when a serde field is missing from the list, when a listed key is no field, when a
//! documented default is not the struct's own, or when a required key's example is refused.
//!
//! ```
//! use sluice_transforms::config_doc::{check_documented, Documented};
//! use sluice_transforms::io::file::FileSourceConfig;
//! assert!(FileSourceConfig::KEYS.iter().any(|k| k.name == "state_dir"));
//! check_documented::<FileSourceConfig>().unwrap();
//! ```

use std::fmt::Debug;

use serde::de::{self, DeserializeOwned, Visitor};
use serde::Deserialize;

/// Type names, as the reference prints them.
pub mod ty {
    /// A string.
    pub const STRING: &str = "string";
    /// A file or directory; relative to the config file's folder.
    pub const PATH: &str = "path";
    /// A path or a glob pattern; relative to the config file's folder.
    pub const GLOB: &str = "path or glob";
    /// A `${attr:-default}` template.
    pub const TEMPLATE: &str = "template";
    /// `true` or `false`.
    pub const BOOL: &str = "boolean";
    /// An integer above zero.
    pub const COUNT: &str = "integer";
    /// Bytes (`"100MB"`, `"8 MiB"`, a bare number is bytes).
    pub const SIZE: &str = "size";
    /// A duration (`"60s"`, `"250ms"`, a bare number is seconds).
    pub const DURATION: &str = "duration";
    /// An array of strings.
    pub const STRINGS: &str = "array of strings";
    /// A table of string values.
    pub const STRING_TABLE: &str = "table of strings";
    /// A table (described in its own section).
    pub const TABLE: &str = "table";
    /// An array of tables (described in its own section).
    pub const TABLES: &str = "array of tables";
    /// Any TOML value.
    pub const ANY: &str = "any value";
}

/// Whether a key must be given, and what it is when not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// The key must be given; the TOML value is an example (used by `sluice config example`).
    Required(&'static str),
    /// The key may be absent, and then nothing is set (the description says what happens).
    Optional,
    /// The key may be absent, and then it has this value (TOML).
    Default(&'static str),
}

/// One key of a config table.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    /// The key, as a config file spells it.
    pub name: &'static str,
    /// Its type (one of [`ty`], or the values an enum takes: `"json" | "text"`).
    pub ty: &'static str,
    /// Required, optional or defaulted.
    pub presence: Presence,
    /// One line on what it does.
    pub doc: &'static str,
    /// The keys of a nested table (or of each table of an array of tables).
    pub table: Option<fn() -> &'static [Key]>,
}

impl Key {
    /// A key that must be given; `example` is a TOML value it takes.
    pub const fn required(
        name: &'static str,
        ty: &'static str,
        example: &'static str,
        doc: &'static str,
    ) -> Key {
        Key {
            name,
            ty,
            presence: Presence::Required(example),
            doc,
            table: None,
        }
    }

    /// A key that may be absent, and then sets nothing.
    pub const fn optional(name: &'static str, ty: &'static str, doc: &'static str) -> Key {
        Key {
            name,
            ty,
            presence: Presence::Optional,
            doc,
            table: None,
        }
    }

    /// A key whose absence means `default` (a TOML value).
    pub const fn default(
        name: &'static str,
        ty: &'static str,
        default: &'static str,
        doc: &'static str,
    ) -> Key {
        Key {
            name,
            ty,
            presence: Presence::Default(default),
            doc,
            table: None,
        }
    }

    /// The key is a table (or an array of tables) with these keys.
    pub const fn with_table(mut self, keys: fn() -> &'static [Key]) -> Key {
        self.table = Some(keys);
        self
    }

    /// Whether the value is a filesystem path, resolved against the config file's folder.
    pub fn is_path(&self) -> bool {
        self.ty == ty::PATH || self.ty == ty::GLOB
    }
}

/// A config struct that lists its keys for the reference.
pub trait Documented {
    /// Every key the struct reads, in the order the reference prints them.
    const KEYS: &'static [Key];
    /// More TOML lines that make the required keys' examples a valid table (a rule across
    /// keys: "give `field` or `attribute`"); empty for most structs.
    const EXAMPLE_EXTRA: &'static str = "";

    /// [`Documented::KEYS`], as a function (for [`Key::with_table`]).
    fn keys() -> &'static [Key] {
        Self::KEYS
    }
}

/// The smallest table a struct takes: its required keys' examples (and
/// [`Documented::EXAMPLE_EXTRA`]), as TOML text.
pub fn minimal_toml<T: Documented>() -> String {
    let mut text = String::new();
    for k in T::KEYS {
        if let Presence::Required(example) = k.presence {
            text.push_str(&format!("{} = {example}\n", k.name));
        }
    }
    text.push_str(T::EXAMPLE_EXTRA);
    text
}

/// Checks `T`'s [`Documented::KEYS`] against its serde implementation: the same field names,
/// the required keys' examples read, and every documented default reads as the value the
/// struct takes when the key is absent. Every problem, one per line.
pub fn check_documented<T>() -> Result<(), String>
where
    T: Documented + DeserializeOwned + PartialEq + Debug,
{
    let mut problems = Vec::new();
    check_names(serde_fields::<T>(), T::KEYS, &mut problems);
    let minimal = minimal_toml::<T>();
    match toml::from_str::<T>(&minimal) {
        Err(e) => problems.push(format!(
            "the required keys' examples are refused:\n{minimal}{e}"
        )),
        Ok(base) => {
            for k in T::KEYS {
                let Presence::Default(default) = k.presence else {
                    continue;
                };
                let text = format!("{minimal}{} = {default}\n", k.name);
                match toml::from_str::<T>(&text) {
                    Ok(v) if v == base => {}
                    Ok(v) => problems.push(format!(
                        "`{}`: documented default {default} is not the default: with it {v:?}, without it {base:?}",
                        k.name
                    )),
                    Err(e) => problems.push(format!(
                        "`{}`: documented default {default} is refused: {e}",
                        k.name
                    )),
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            std::any::type_name::<T>(),
            problems.join("\n")
        ))
    }
}

/// Compares serde's field names with the documented keys, pushing the differences.
pub fn check_names(fields: &[&str], keys: &[Key], problems: &mut Vec<String>) {
    for f in fields {
        if !keys.iter().any(|k| k.name == *f) {
            problems.push(format!("serde field `{f}` is missing from the reference"));
        }
    }
    for k in keys {
        if !fields.contains(&k.name) {
            problems.push(format!("documented key `{}` is no serde field", k.name));
        }
        if k.table.is_some() && k.ty != ty::TABLE && k.ty != ty::TABLES {
            problems.push(format!(
                "`{}`: only a table or an array of tables has keys of its own",
                k.name
            ));
        }
    }
    let mut names: Vec<&str> = keys.iter().map(|k| k.name).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        problems.push("a key is documented twice".to_string());
    }
}

/// The field names of a struct, as its `Deserialize` impl declares them (empty for a type that
/// is not a struct to serde, such as one with a flattened field).
pub fn serde_fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Fields<'a>(&'a mut &'static [&'static str]);

    impl<'de> de::Deserializer<'de> for Fields<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("fields recorded"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Fields(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        #[serde(default = "three")]
        count: u32,
    }

    fn three() -> u32 {
        3
    }

    impl Documented for Sample {
        const KEYS: &'static [Key] = &[
            Key::required("name", ty::STRING, "\"x\"", "a name"),
            Key::default("count", ty::COUNT, "3", "how many"),
        ];
    }

    #[test]
    fn a_missing_field_a_stray_key_and_a_wrong_default_are_reported() {
        check_documented::<Sample>().unwrap();

        let mut problems = Vec::new();
        check_names(
            serde_fields::<Sample>(),
            &[
                Key::required("name", ty::STRING, "\"x\"", "a name"),
                Key::optional("colour", ty::STRING, "stray"),
            ],
            &mut problems,
        );
        assert_eq!(
            problems,
            [
                "serde field `count` is missing from the reference",
                "documented key `colour` is no serde field"
            ]
        );
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[allow(dead_code)]
    struct Defaults {
        #[serde(default = "three")]
        count: u32,
    }

    impl Documented for Defaults {
        const KEYS: &'static [Key] = &[Key::default("count", ty::COUNT, "4", "how many")];
    }

    #[test]
    fn every_connector_config_documents_every_key_and_default() {
        use crate::decode::{DocumentRule, FieldRule, ScrubPayloadConfig};
        use crate::io::bigquery::{BigQuerySinkConfig, InsertBatchConfig, RetryConfig};
        use crate::io::file::FileSourceConfig;
        use crate::io::kafka::{KafkaSinkConfig, KafkaSourceConfig};
        use crate::io::object::{BatchConfig, LocalSinkConfig, S3SinkConfig};
        use crate::io::pubsub::{PubsubSinkConfig, PubsubSourceConfig};
        use crate::io::stdio::{StdinSourceConfig, StdioSinkConfig};
        let problems: Vec<String> = [
            check_documented::<FileSourceConfig>(),
            check_documented::<StdinSourceConfig>(),
            check_documented::<StdioSinkConfig>(),
            check_documented::<LocalSinkConfig>(),
            check_documented::<S3SinkConfig>(),
            check_documented::<BatchConfig>(),
            check_documented::<BigQuerySinkConfig>(),
            check_documented::<InsertBatchConfig>(),
            check_documented::<RetryConfig>(),
            check_documented::<KafkaSourceConfig>(),
            check_documented::<KafkaSinkConfig>(),
            check_documented::<PubsubSourceConfig>(),
            check_documented::<PubsubSinkConfig>(),
            check_documented::<ScrubPayloadConfig>(),
            check_documented::<FieldRule>(),
            check_documented::<DocumentRule>(),
        ]
        .into_iter()
        .filter_map(Result::err)
        .collect();
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn a_default_that_is_not_the_structs_fails() {
        let e = check_documented::<Defaults>().unwrap_err();
        assert!(e.contains("documented default 4 is not the default"), "{e}");
    }
}

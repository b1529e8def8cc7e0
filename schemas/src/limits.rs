//! Bounds on a document's shape, checked before validation.

use serde_json::Value;

/// Bounds a decoded document must respect before it is validated.
///
/// Validation and other recursive walks use the stack in proportion to a document's nesting,
/// so a pathological payload (`[[[[...]]]]`) must be rejected first. Note that
/// `serde_json::from_slice` already refuses documents nested deeper than 128; a `Value` built
/// in code has no such bound, and this check itself never recurses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum number of nested arrays and objects; `[]` has depth 1, a scalar depth 0.
    pub max_depth: usize,
    /// Maximum number of elements of one array (and members of one object).
    pub max_array_len: usize,
}

impl Limits {
    /// Default maximum depth.
    pub const DEFAULT_MAX_DEPTH: usize = 64;
    /// Default maximum array (and object) length.
    pub const DEFAULT_MAX_ARRAY_LEN: usize = 1_000_000;

    /// Checks `value` against these limits; see [`check_depth_and_size`].
    pub fn check(&self, value: &Value) -> Result<(), LimitExceeded> {
        check_depth_and_size(value, self.max_depth, self.max_array_len)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: Self::DEFAULT_MAX_DEPTH,
            max_array_len: Self::DEFAULT_MAX_ARRAY_LEN,
        }
    }
}

/// A document broke one of the [`Limits`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitExceeded {
    /// Arrays and objects are nested deeper than allowed.
    #[error(
        "{}: document nested deeper than {max_depth} levels",
        display_pointer(instance_path)
    )]
    TooDeep {
        /// JSON pointer of the first container beyond the limit.
        instance_path: String,
        /// The limit.
        max_depth: usize,
    },
    /// An array or object has too many elements.
    #[error(
        "{}: {len} elements exceed the limit of {max_len}",
        display_pointer(instance_path)
    )]
    TooLong {
        /// JSON pointer of the array or object.
        instance_path: String,
        /// Its length.
        len: usize,
        /// The limit.
        max_len: usize,
    },
}

/// Shows the root pointer (the empty string) readably.
pub(crate) fn display_pointer(pointer: &str) -> &str {
    if pointer.is_empty() {
        "(root)"
    } else {
        pointer
    }
}

#[derive(Clone, Copy)]
enum Segment<'a> {
    Index(usize),
    Key(&'a str),
}

enum Children<'a> {
    Array(std::iter::Enumerate<std::slice::Iter<'a, Value>>),
    Object(serde_json::map::Iter<'a>),
}

impl<'a> Iterator for Children<'a> {
    type Item = (Segment<'a>, &'a Value);
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Children::Array(it) => it.next().map(|(i, v)| (Segment::Index(i), v)),
            Children::Object(it) => it.next().map(|(k, v)| (Segment::Key(k.as_str()), v)),
        }
    }
}

fn pointer<'a>(stack: &[(Option<Segment<'a>>, Children<'a>)], last: Option<Segment<'a>>) -> String {
    let mut out = String::new();
    for segment in stack.iter().filter_map(|(s, _)| *s).chain(last) {
        out.push('/');
        match segment {
            Segment::Index(i) => out.push_str(&i.to_string()),
            Segment::Key(k) => out.push_str(&k.replace('~', "~0").replace('/', "~1")),
        }
    }
    out
}

/// Checks that `value` nests at most `max_depth` arrays and objects and that none of them has
/// more than `max_array_len` elements, without recursion (so it is safe on any `Value`).
///
/// Call it on a decoded payload before [`Schema::validate`](crate::Schema::validate).
///
/// ```
/// use serde_json::json;
/// use sluice_schemas::{check_depth_and_size, LimitExceeded};
///
/// assert!(check_depth_and_size(&json!({"a": [1, 2]}), 2, 10).is_ok());
/// let err = check_depth_and_size(&json!({"a": [[1]]}), 2, 10).unwrap_err();
/// assert!(matches!(err, LimitExceeded::TooDeep { .. }));
/// assert_eq!(err.to_string(), "/a/0: document nested deeper than 2 levels");
/// ```
pub fn check_depth_and_size(
    value: &Value,
    max_depth: usize,
    max_array_len: usize,
) -> Result<(), LimitExceeded> {
    let mut stack: Vec<(Option<Segment<'_>>, Children<'_>)> = Vec::new();
    let mut next: Option<(Option<Segment<'_>>, &Value)> = Some((None, value));
    loop {
        if let Some((segment, value)) = next.take() {
            let (len, children) = match value {
                Value::Array(a) => (a.len(), Children::Array(a.iter().enumerate())),
                Value::Object(o) => (o.len(), Children::Object(o.iter())),
                _ => (0, Children::Array([].iter().enumerate())),
            };
            if matches!(value, Value::Array(_) | Value::Object(_)) {
                if stack.len() + 1 > max_depth {
                    return Err(LimitExceeded::TooDeep {
                        instance_path: pointer(&stack, segment),
                        max_depth,
                    });
                }
                if len > max_array_len {
                    return Err(LimitExceeded::TooLong {
                        instance_path: pointer(&stack, segment),
                        len,
                        max_len: max_array_len,
                    });
                }
                stack.push((segment, children));
            }
        }
        let Some((_, children)) = stack.last_mut() else {
            return Ok(());
        };
        match children.next() {
            Some((segment, child)) => next = Some((Some(segment), child)),
            None => {
                stack.pop();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(depth: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..depth {
            v = Value::Array(vec![v]);
        }
        v
    }

    #[test]
    fn depth_boundaries() {
        assert!(check_depth_and_size(&json!(1), 0, 0).is_ok());
        assert!(check_depth_and_size(&nested(64), 64, 10).is_ok());
        let err = check_depth_and_size(&nested(65), 64, 10).unwrap_err();
        assert_eq!(
            err,
            LimitExceeded::TooDeep {
                instance_path: "/0".repeat(64),
                max_depth: 64
            }
        );
        assert!(Limits::default().check(&nested(64)).is_ok());
    }

    #[test]
    fn length_and_pointer_escaping() {
        let doc = json!({"a/b": {"c~d": [1, 2, 3]}});
        assert!(check_depth_and_size(&doc, 3, 3).is_ok());
        let err = check_depth_and_size(&doc, 3, 2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/a~1b/c~0d: 3 elements exceed the limit of 2"
        );
        let err = check_depth_and_size(&json!([1, 2]), 3, 1).unwrap_err();
        assert_eq!(err.to_string(), "(root): 2 elements exceed the limit of 1");
    }

    #[test]
    fn very_deep_values_do_not_overflow() {
        let deep = nested(100_000);
        assert!(check_depth_and_size(&deep, 64, 10).is_err());
        assert!(check_depth_and_size(&deep, 200_000, 10).is_ok());
        // serde_json drops values recursively: unwind iteratively to keep this test safe
        let mut v = deep;
        while let Value::Array(mut a) = v {
            v = a.pop().unwrap_or(Value::Null);
        }
    }
}

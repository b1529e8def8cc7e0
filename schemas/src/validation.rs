//! Validation failures.

use std::fmt;

use crate::limits::display_pointer;

/// One way a document violates its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationIssue {
    /// JSON pointer of the offending value in the document (`""` is the root).
    pub instance_path: String,
    /// JSON pointer of the failing keyword in the schema.
    pub schema_path: String,
    /// What is wrong, e.g. `"x" is not a "uuid"`.
    pub message: String,
}

impl fmt::Display for ValidationIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            display_pointer(&self.instance_path),
            self.message
        )
    }
}

/// A document does not match its schema: the first few issues found (at least one).
///
/// Displays as the issues joined by `; `, each as `<instance path>: <reason>`, for example
/// `/clientId: "x" does not match "^[0-9a-f]{8}-..."`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationFailure {
    issues: Vec<ValidationIssue>,
}

impl ValidationFailure {
    /// The most issues a failure keeps.
    pub const MAX_ISSUES: usize = 3;

    /// A failure made of these issues; `None` if there are none.
    pub fn new(issues: Vec<ValidationIssue>) -> Option<Self> {
        (!issues.is_empty()).then_some(ValidationFailure { issues })
    }

    /// The first issue.
    pub fn first(&self) -> &ValidationIssue {
        &self.issues[0]
    }

    /// JSON pointer of the first issue.
    pub fn instance_path(&self) -> &str {
        &self.first().instance_path
    }

    /// The issues found (at most [`Self::MAX_ISSUES`]).
    pub fn issues(&self) -> &[ValidationIssue] {
        &self.issues
    }
}

impl fmt::Display for ValidationFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            issue.fmt(f)?;
        }
        Ok(())
    }
}

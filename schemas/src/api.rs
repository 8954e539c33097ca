//! The admin API's request and answer bodies: shared by the server (`pipeline/http`) and its
//! clients (the `herald` CLI), so neither can drift from the other. Pure types and parsing.

use serde::{Deserialize, Serialize};

use crate::directory::{ImportLine, Platform};
use crate::{Channel, JsonObject, ValidationError};

/// A line of an import that was not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineError {
    pub line: usize,
    pub code: String,
    pub detail: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    pub imported: usize,
    pub errors: Vec<LineError>,
}

/// A list of user ids: the members added to a group, or a page of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Members {
    pub users: Vec<String>,
}

/// What publishing a template did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub id: String,
    pub version: u32,
    /// False when the upload equals the latest version, which then stays current.
    pub created: bool,
}

/// A template in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateSummary {
    pub id: String,
    pub latest: u32,
    #[serde(default)]
    pub description: Option<String>,
    pub updated_at: String,
}

/// What to preview.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreviewRequest {
    /// Template data; the template's sample data when absent.
    pub data: Option<JsonObject>,
    pub locale: Option<String>,
    /// Channels to render; every channel of the template when empty.
    pub channels: Vec<Channel>,
    pub timezone: Option<String>,
    /// Push platform (default ios).
    pub platform: Option<Platform>,
    /// Published version (API only; default latest).
    pub version: Option<u32>,
}

/// Parses and validates JSONL import lines; blank lines are skipped. `first_line` is the
/// number of the text's first line in the caller's file. Returns the good lines and, for every
/// bad one, its number and reason.
pub fn parse_import(text: &str, first_line: usize) -> (Vec<ImportLine>, Vec<LineError>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let number = first_line + i;
        match serde_json::from_str::<ImportLine>(line) {
            Ok(parsed) => match parsed.validate() {
                Ok(()) => good.push(parsed),
                Err(ValidationError { code, detail }) => bad.push(LineError { line: number, code: code.into(), detail }),
            },
            Err(e) => bad.push(LineError { line: number, code: "invalid_json".into(), detail: e.to_string() }),
        }
    }
    (good, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_errors_carry_their_line_numbers() {
        let text = "{\"id\":\"a\"}\n\n{\"id\":\"b\",\"email\":\"nope\"}\nnot json\n{\"id\":\"c\",\"phone\":\"+14155550100\"}\n";
        let (good, bad) = parse_import(text, 101);
        assert_eq!(good.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(bad.iter().map(|e| (e.line, e.code.as_str())).collect::<Vec<_>>(), [(103, "invalid_email"), (104, "invalid_json")]);
    }
}

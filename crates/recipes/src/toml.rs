//! Reading recipe TOML strictly: every error names the file, line, column and key, and an
//! unknown key is an error that lists the allowed ones.

use std::ops::Range;

use toml_edit::{Item, Table, Value};

use crate::error::{Error, Result};

/// A recipe file's name and text, to turn byte offsets into line and column.
#[derive(Debug)]
pub(crate) struct Source {
    /// The name shown in errors (a path, or `<built-in>/NAME.toml`).
    pub name: String,
    /// The text.
    pub text: String,
}

impl Source {
    /// 1-based line and column of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text.as_bytes()[..offset];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        let column = String::from_utf8_lossy(&before[line_start..])
            .chars()
            .count()
            + 1;
        (line, column)
    }

    /// An error at a span (or the start of the file when there is none).
    pub fn error(&self, span: Option<Range<usize>>, message: impl Into<String>) -> Error {
        let (line, column) = self.position(span.map_or(0, |s| s.start));
        Error::Recipe {
            file: self.name.clone(),
            line,
            column,
            message: message.into(),
        }
    }

    /// `file:line` of a span, for messages that point back at a step.
    pub fn location(&self, span: Option<Range<usize>>) -> String {
        let (line, _) = self.position(span.map_or(0, |s| s.start));
        format!("{}:{line}", self.name)
    }
}

/// A table (or inline table) whose keys are checked against an allowed list.
pub(crate) struct Fields<'a> {
    src: &'a Source,
    /// What the table is, for messages: `step "overlay-env"`, `params.qt4`, …
    what: String,
    entries: Vec<(&'a str, Option<Range<usize>>, &'a Item)>,
    span: Option<Range<usize>>,
}

/// Joins names for "allowed: …" lists.
pub(crate) fn list(names: &[&str]) -> String {
    names.join(", ")
}

impl<'a> Fields<'a> {
    /// The root table of a document.
    pub fn root(src: &'a Source, table: &'a Table, allowed: &[&str]) -> Result<Fields<'a>> {
        let entries = table
            .iter()
            .map(|(k, v)| (k, table.key(k).and_then(|key| key.span()), v))
            .collect();
        let fields = Fields {
            src,
            what: "recipe".into(),
            entries,
            span: table.span(),
        };
        fields.check_keys(allowed)?;
        Ok(fields)
    }

    /// A table-like item (table or inline table).
    pub fn of(src: &'a Source, item: &'a Item, what: &str, allowed: &[&str]) -> Result<Fields<'a>> {
        let fields = Fields::unchecked(src, item, what)?;
        fields.check_keys(allowed)?;
        Ok(fields)
    }

    /// A table-like item whose keys are checked later (by [`Fields::check_keys`]).
    pub fn unchecked(src: &'a Source, item: &'a Item, what: &str) -> Result<Fields<'a>> {
        let entries: Vec<_> = match item {
            Item::Table(t) => t
                .iter()
                .map(|(k, v)| (k, t.key(k).and_then(|key| key.span()), v))
                .collect(),
            Item::Value(Value::InlineTable(t)) => t
                .iter()
                .filter_map(|(k, _)| {
                    let (key, v) = t.get_key_value(k)?;
                    Some((k, key.span(), v))
                })
                .collect(),
            _ => return Err(src.error(item.span(), format!("{what}: expected a table"))),
        };
        Ok(Fields {
            src,
            what: what.to_string(),
            entries,
            span: item.span(),
        })
    }

    /// Errors on the first key not in `allowed`.
    pub fn check_keys(&self, allowed: &[&str]) -> Result<()> {
        for (key, span, _) in &self.entries {
            if !allowed.contains(key) {
                return Err(self.src.error(
                    span.clone(),
                    format!(
                        "{}: unknown key `{key}`; allowed: {}",
                        self.what,
                        list(allowed)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The source, for errors.
    pub fn source(&self) -> &'a Source {
        self.src
    }

    /// The table's span.
    pub fn span(&self) -> Option<Range<usize>> {
        self.span.clone()
    }

    /// The item under `key`.
    pub fn get(&self, key: &str) -> Option<&'a Item> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, _, v)| *v)
    }

    /// The keys, in file order.
    pub fn keys(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.entries.iter().map(|(k, _, _)| *k)
    }

    /// An error at `key`'s value (or the table when absent).
    pub fn error(&self, key: &str, message: impl std::fmt::Display) -> Error {
        let span = self.get(key).and_then(|i| i.span()).or_else(|| self.span());
        self.src
            .error(span, format!("{}: `{key}`: {message}", self.what))
    }

    /// A string value, if present.
    pub fn string(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(item) => match item.as_str() {
                Some(s) => Ok(Some(s.to_string())),
                None => Err(self.error(key, "expected a string")),
            },
        }
    }

    /// A required string value.
    pub fn required(&self, key: &str) -> Result<String> {
        self.string(key)?.ok_or_else(|| {
            self.src.error(
                self.span(),
                format!("{}: missing required key `{key}`", self.what),
            )
        })
    }

    /// A string that must be one of `allowed`.
    pub fn choice(&self, key: &str, allowed: &[&str]) -> Result<Option<String>> {
        let Some(value) = self.string(key)? else {
            return Ok(None);
        };
        if allowed.contains(&value.as_str()) {
            Ok(Some(value))
        } else {
            Err(self.error(
                key,
                format!("unknown value `{value}`; allowed: {}", list(allowed)),
            ))
        }
    }

    /// A string or an array of strings, as a list.
    pub fn strings(&self, key: &str) -> Result<Option<Vec<String>>> {
        let Some(item) = self.get(key) else {
            return Ok(None);
        };
        if let Some(s) = item.as_str() {
            return Ok(Some(vec![s.to_string()]));
        }
        let Some(array) = item.as_array() else {
            return Err(self.error(key, "expected a string or an array of strings"));
        };
        let mut out = Vec::new();
        for value in array.iter() {
            match value.as_str() {
                Some(s) => out.push(s.to_string()),
                None => {
                    return Err(self.src.error(
                        value.span(),
                        format!("{}: `{key}`: expected strings in the array", self.what),
                    ));
                }
            }
        }
        if out.is_empty() {
            return Err(self.error(key, "must not be empty"));
        }
        Ok(Some(out))
    }
}

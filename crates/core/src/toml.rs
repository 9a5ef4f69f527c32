//! Reading TOML strictly (recipes and patch rules): every error names the file, line, column
//! and key, an unknown key is an error that lists the allowed ones, and a value of the wrong
//! type is refused, not converted. Built on `toml_edit`, whose parser keeps the spans.
//!
//! The checks exist once; the words differ between the file formats (their messages are part
//! of what users and tests read), so each format brings a [`Wording`].

use std::ops::Range;

use toml_edit::{ArrayOfTables, Item, Table, Value};

/// An error at a place in a file: `FILE:LINE:COLUMN: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct Located {
    /// The file's name (a path, or `<built-in>/…`).
    pub file: String,
    /// 1-based line of the offending text.
    pub line: usize,
    /// 1-based column (in characters) of the offending text.
    pub column: usize,
    /// What is wrong, e.g. an unknown key and the allowed keys.
    pub message: String,
}

type Result<T, E = Located> = std::result::Result<T, E>;

/// What a value was expected to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// A string.
    String,
    /// An integer.
    Integer,
    /// An array of strings.
    Strings,
    /// A value, not a table.
    Value,
    /// A string, or an array of strings.
    StringOrStrings,
    /// A string as an element of an array.
    StringInArray,
    /// A table (the key is empty: `what` names it).
    Table,
    /// An array of tables (`[[key]]`).
    Tables,
}

/// How a file format words the checks' messages. `what` names the table (`step "a"`, `the
/// rule file`, `[[edits]]`, …).
#[derive(Debug, Clone, Copy)]
pub struct Wording {
    /// A key that is not allowed (`allowed` already joined with `, `).
    pub unknown_key: fn(what: &str, key: &str, allowed: &str) -> String,
    /// A value of the wrong type.
    pub wrong_type: fn(what: &str, key: &str, expected: Expected) -> String,
    /// A required key that is absent.
    pub missing: fn(what: &str, key: &str) -> String,
    /// A value that must not be empty.
    pub empty: fn(what: &str, key: &str) -> String,
}

/// A file's name and text, to turn byte offsets into line and column. `E` is the error type
/// the caller's parser returns (it converts from [`Located`]).
#[derive(Debug)]
pub struct Source<E = Located> {
    /// The name shown in errors (a path, or `<built-in>/NAME.toml`).
    pub name: String,
    /// The text.
    pub text: String,
    error: std::marker::PhantomData<fn() -> E>,
}

impl<E: From<Located>> Source<E> {
    /// A file's name and text.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Source<E> {
        Source {
            name: name.into(),
            text: text.into(),
            error: std::marker::PhantomData,
        }
    }

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
    pub fn error(&self, span: Option<Range<usize>>, message: impl Into<String>) -> E {
        let (line, column) = self.position(span.map_or(0, |s| s.start));
        E::from(Located {
            file: self.name.clone(),
            line,
            column,
            message: message.into(),
        })
    }

    /// `file:line` of a span, for messages that point back at a step.
    pub fn location(&self, span: Option<Range<usize>>) -> String {
        let (line, _) = self.position(span.map_or(0, |s| s.start));
        format!("{}:{line}", self.name)
    }
}

/// A table (or inline table) whose keys are checked against an allowed list.
pub struct Fields<'a, E = Located> {
    src: &'a Source<E>,
    wording: &'a Wording,
    /// What the table is, for messages: `step "overlay-env"`, `params.qt4`, …
    what: String,
    entries: Vec<(&'a str, Option<Range<usize>>, &'a Item)>,
    span: Option<Range<usize>>,
}

/// Joins names for "allowed: …" lists.
pub fn list(names: &[&str]) -> String {
    names.join(", ")
}

fn table_entries(t: &Table) -> Vec<(&str, Option<Range<usize>>, &Item)> {
    t.iter()
        .map(|(k, v)| (k, t.key(k).and_then(|key| key.span()), v))
        .collect()
}

impl<'a, E: From<Located>> Fields<'a, E> {
    /// A table, its keys checked against `allowed`.
    pub fn table(
        src: &'a Source<E>,
        wording: &'a Wording,
        table: &'a Table,
        what: &str,
        allowed: &[&str],
    ) -> Result<Fields<'a, E>, E> {
        let fields = Fields {
            src,
            wording,
            what: what.to_string(),
            entries: table_entries(table),
            span: table.span(),
        };
        fields.check_keys(allowed)?;
        Ok(fields)
    }

    /// A table-like item (table or inline table), its keys checked against `allowed`.
    pub fn of(
        src: &'a Source<E>,
        wording: &'a Wording,
        item: &'a Item,
        what: &str,
        allowed: &[&str],
    ) -> Result<Fields<'a, E>, E> {
        let fields = Fields::unchecked(src, wording, item, what)?;
        fields.check_keys(allowed)?;
        Ok(fields)
    }

    /// A table-like item whose keys are checked later (by [`Fields::check_keys`]), or not at
    /// all (a table of names the file chooses, such as `[params]`).
    pub fn unchecked(
        src: &'a Source<E>,
        wording: &'a Wording,
        item: &'a Item,
        what: &str,
    ) -> Result<Fields<'a, E>, E> {
        let entries: Vec<_> = match item {
            Item::Table(t) => table_entries(t),
            Item::Value(Value::InlineTable(t)) => t
                .iter()
                .filter_map(|(k, _)| {
                    let (key, v) = t.get_key_value(k)?;
                    Some((k, key.span(), v))
                })
                .collect(),
            _ => {
                return Err(src.error(item.span(), (wording.wrong_type)(what, "", Expected::Table)));
            }
        };
        Ok(Fields {
            src,
            wording,
            what: what.to_string(),
            entries,
            span: item.span(),
        })
    }

    /// The same table under another name (for messages).
    pub fn with_what(&self, what: impl Into<String>) -> Fields<'a, E> {
        Fields {
            src: self.src,
            wording: self.wording,
            what: what.into(),
            entries: self.entries.clone(),
            span: self.span.clone(),
        }
    }

    /// Errors on the first key not in `allowed`.
    pub fn check_keys(&self, allowed: &[&str]) -> Result<(), E> {
        for (key, span, _) in &self.entries {
            if !allowed.contains(key) {
                return Err(self.src.error(
                    span.clone(),
                    (self.wording.unknown_key)(&self.what, key, &list(allowed)),
                ));
            }
        }
        Ok(())
    }

    /// The source, for errors.
    pub fn source(&self) -> &'a Source<E> {
        self.src
    }

    /// What the table is.
    pub fn what(&self) -> &str {
        &self.what
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

    /// Whether `key` is present.
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The keys, in file order.
    pub fn keys(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.entries.iter().map(|(k, _, _)| *k)
    }

    /// The keys with their spans, in file order.
    pub fn keys_with_spans(&self) -> impl Iterator<Item = (&'a str, Option<Range<usize>>)> + '_ {
        self.entries.iter().map(|(k, s, _)| (*k, s.clone()))
    }

    /// The span of `key` itself (or the table's).
    pub fn key_span(&self, key: &str) -> Option<Range<usize>> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .and_then(|(_, s, _)| s.clone())
            .or_else(|| self.span())
    }

    /// The span of `key`'s value (or of the key, or the table's).
    pub fn value_span(&self, key: &str) -> Option<Range<usize>> {
        self.get(key)
            .and_then(|i| i.span())
            .or_else(|| self.key_span(key))
    }

    /// An error at `key`'s value, in the words the caller chose.
    pub fn at(&self, key: &str, message: impl Into<String>) -> E {
        self.src.error(self.value_span(key), message)
    }

    /// An error at the table itself.
    pub fn at_table(&self, message: impl Into<String>) -> E {
        self.src.error(self.span(), message)
    }

    /// An error at `key`'s value, prefixed `WHAT: `KEY`: ` (the recipe style).
    pub fn error(&self, key: &str, message: impl std::fmt::Display) -> E {
        self.at(key, format!("{}: `{key}`: {message}", self.what))
    }

    fn wrong(&self, key: &str, expected: Expected) -> E {
        self.at(key, (self.wording.wrong_type)(&self.what, key, expected))
    }

    /// The value under `key` (a table there is an error).
    pub fn value(&self, key: &str) -> Result<Option<&'a Value>, E> {
        match self.get(key) {
            None => Ok(None),
            Some(Item::Value(v)) => Ok(Some(v)),
            Some(_) => Err(self.src.error(
                self.key_span(key),
                (self.wording.wrong_type)(&self.what, key, Expected::Value),
            )),
        }
    }

    /// A string value, if present.
    pub fn string(&self, key: &str) -> Result<Option<String>, E> {
        match self.get(key) {
            None => Ok(None),
            Some(item) => match item.as_str() {
                Some(s) => Ok(Some(s.to_string())),
                None => Err(self.wrong(key, Expected::String)),
            },
        }
    }

    /// A required string value.
    pub fn required(&self, key: &str) -> Result<String, E> {
        self.string(key)?
            .ok_or_else(|| self.at_table((self.wording.missing)(&self.what, key)))
    }

    /// A required string value that is not blank.
    pub fn required_nonblank(&self, key: &str) -> Result<String, E> {
        match self.required(key)? {
            s if s.trim().is_empty() => Err(self.at(key, (self.wording.empty)(&self.what, key))),
            s => Ok(s),
        }
    }

    /// An integer value, if present.
    pub fn integer(&self, key: &str) -> Result<Option<i64>, E> {
        match self.value(key)? {
            None => Ok(None),
            Some(Value::Integer(i)) => Ok(Some(*i.value())),
            Some(_) => Err(self.wrong(key, Expected::Integer)),
        }
    }

    /// A string that must be one of `allowed`.
    pub fn choice(&self, key: &str, allowed: &[&str]) -> Result<Option<String>, E> {
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

    /// An array of strings (possibly empty), if present.
    pub fn string_array(&self, key: &str) -> Result<Option<Vec<String>>, E> {
        match self.value(key)? {
            None => Ok(None),
            Some(Value::Array(a)) => self.strings_of(key, a).map(Some),
            Some(_) => Err(self.wrong(key, Expected::Strings)),
        }
    }

    /// A string or a non-empty array of strings, as a list.
    pub fn strings(&self, key: &str) -> Result<Option<Vec<String>>, E> {
        let Some(item) = self.get(key) else {
            return Ok(None);
        };
        if let Some(s) = item.as_str() {
            return Ok(Some(vec![s.to_string()]));
        }
        let Some(array) = item.as_array() else {
            return Err(self.wrong(key, Expected::StringOrStrings));
        };
        let out = self.strings_of(key, array)?;
        if out.is_empty() {
            return Err(self.at(key, (self.wording.empty)(&self.what, key)));
        }
        Ok(Some(out))
    }

    fn strings_of(&self, key: &str, array: &toml_edit::Array) -> Result<Vec<String>, E> {
        array
            .iter()
            .map(|v| match v.as_str() {
                Some(s) => Ok(s.to_string()),
                None => Err(self.src.error(
                    v.span(),
                    (self.wording.wrong_type)(&self.what, key, Expected::StringInArray),
                )),
            })
            .collect()
    }

    /// The tables of `[[key]]` (none when absent).
    pub fn tables(&self, key: &str) -> Result<Vec<&'a Table>, E> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Item::ArrayOfTables(a)) => Ok(tables_of(a)),
            Some(_) => Err(self.src.error(
                self.key_span(key),
                (self.wording.wrong_type)(&self.what, key, Expected::Tables),
            )),
        }
    }
}

fn tables_of(a: &ArrayOfTables) -> Vec<&Table> {
    a.iter().collect()
}

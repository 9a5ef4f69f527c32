//! How recipe files word the strict reader's messages (`hostkit_core::toml`): `WHAT: …`
//! first, then the key.

use hostkit_core::toml::{Expected, Wording};

use crate::error::Error;

/// The recipe wording.
pub(crate) static WORDING: Wording = Wording {
    unknown_key: |what, key, allowed| format!("{what}: unknown key `{key}`; allowed: {allowed}"),
    wrong_type: |what, key, expected| {
        let expected = match expected {
            Expected::String => "expected a string",
            Expected::Integer => "expected an integer",
            Expected::Strings => "expected an array of strings",
            Expected::Value => "expected a value, not a table",
            Expected::StringOrStrings => "expected a string or an array of strings",
            Expected::StringInArray => "expected strings in the array",
            Expected::Table => return format!("{what}: expected a table"),
            Expected::Tables => "expected an array of tables",
        };
        format!("{what}: `{key}`: {expected}")
    },
    missing: |what, key| format!("{what}: missing required key `{key}`"),
    empty: |what, key| format!("{what}: `{key}`: must not be empty"),
};

pub(crate) use hostkit_core::toml::list;

/// A table of a recipe file (errors are the crate's [`Error`]).
pub(crate) type Fields<'a> = hostkit_core::toml::Fields<'a, Error>;
/// A recipe file being read.
pub(crate) type Source = hostkit_core::toml::Source<Error>;

//! `tun up --config FILE`: the options of `tun up` in a TOML file.
//!
//! The keys are not a second list to keep in step with [`UpArgs`]: they are read from `tun up`'s
//! own clap definition. Every long option is a key of the same name (`--coalesce-us 50` is
//! `coalesce-us = 50`), except [`COMMAND_LINE_ONLY`]; a flag is a boolean, a repeatable option
//! an array (or one value), a number an integer, anything else a string. A value is checked by
//! the option's own value parser, and the whole by what `up` itself checks, so the file gets the
//! command line's errors, each at the file, line and column it comes from.
//!
//! Precedence: the command line (and the environment, `HOSTKIT_RUN_DIR`), then the file, then
//! the defaults. The file is an instruction read as root: [`hostkit_core::source::read_file`].

use std::ffi::{OsStr, OsString};
use std::ops::Range;
use std::path::Path;

use anyhow::anyhow;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use hostkit_core::toml::{Expected, Located, Wording};
use toml_edit::{ImDocument, Value};

use super::UpArgs;

type Fields<'a> = hostkit_core::toml::Fields<'a, Located>;
type Source = hostkit_core::toml::Source<Located>;

/// Long options of `tun up` that have no key: the file itself, and `--dry-run` (what to do, not
/// what the tunnel is).
pub const COMMAND_LINE_ONLY: &[&str] = &["config", "dry-run"];

/// What a table in the file is called in messages.
const WHAT: &str = "the tunnel configuration";

static WORDING: Wording = Wording {
    unknown_key: |_, key, allowed| {
        format!("unknown key `{key}`; allowed keys (the long options of `tun up`): {allowed}")
    },
    wrong_type: |_, key, expected| match expected {
        Expected::Integer => format!("`{key}`: expected an integer"),
        Expected::String | Expected::StringInArray => format!("`{key}`: expected a string"),
        Expected::Strings | Expected::StringOrStrings => {
            format!("`{key}`: expected a string or an array of strings")
        }
        Expected::Value | Expected::Table | Expected::Tables => {
            format!("`{key}`: expected a value, not a table")
        }
    },
    missing: |_, key| format!("missing key `{key}`"),
    empty: |_, key| format!("`{key}`: must not be empty"),
};

/// The TOML type of an option's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Integer,
    Text,
}

/// How an option is written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A flag: `true` or `false`.
    Flag,
    /// One value.
    One(Ty),
    /// A repeatable option: an array of values (or a single one).
    List(Ty),
}

/// A key of the file: one long option of `tun up`.
#[derive(Debug, Clone)]
struct Key {
    id: String,
    long: String,
    shape: Shape,
}

/// `tun up`'s options as clap defines them (built: help included).
fn command() -> &'static Command {
    static UP: std::sync::OnceLock<Command> = std::sync::OnceLock::new();
    UP.get_or_init(|| {
        let mut cmd = UpArgs::augment_args(Command::new("up"));
        cmd.build();
        cmd
    })
}

fn ty(arg: &Arg) -> Ty {
    use std::any::TypeId;
    let id = arg.get_value_parser().type_id();
    let integers = [
        TypeId::of::<u8>(),
        TypeId::of::<u16>(),
        TypeId::of::<u32>(),
        TypeId::of::<u64>(),
        TypeId::of::<usize>(),
        TypeId::of::<i8>(),
        TypeId::of::<i16>(),
        TypeId::of::<i32>(),
        TypeId::of::<i64>(),
        TypeId::of::<isize>(),
    ];
    if integers.iter().any(|t| id == *t) {
        Ty::Integer
    } else {
        Ty::Text
    }
}

/// How `arg` is written in the file; `None` for help and for actions the file cannot express
/// (a unit test makes sure `tun up` has none of those).
fn shape(arg: &Arg) -> Option<Shape> {
    match arg.get_action() {
        ArgAction::SetTrue => Some(Shape::Flag),
        ArgAction::Set => Some(Shape::One(ty(arg))),
        ArgAction::Append => Some(Shape::List(ty(arg))),
        _ => None,
    }
}

/// The keys, in the order of `tun up --help`.
fn keys(cmd: &'static Command) -> Vec<Key> {
    cmd.get_arguments()
        .filter_map(|arg| {
            let long = arg.get_long()?;
            if COMMAND_LINE_ONLY.contains(&long) {
                return None;
            }
            Some(Key {
                id: arg.get_id().to_string(),
                long: long.to_string(),
                shape: shape(arg)?,
            })
        })
        .collect()
}

/// clap's message without its `error: ` prefix, usage and tips, on one line.
fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    let first = text.split("\n\n").next().unwrap_or_default();
    first
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// One key of a file: the tokens it stands for on the command line, and where it is.
#[derive(Debug)]
struct Entry {
    id: String,
    tokens: Vec<OsString>,
    /// The value's span.
    span: Option<Range<usize>>,
    /// Each value's text and span (for a list, to point at the element a message names).
    values: Vec<(String, Option<Range<usize>>)>,
}

/// A configuration file, read and each value checked.
#[derive(Debug)]
pub(crate) struct FileConfig {
    src: Source,
    entries: Vec<Entry>,
}

/// Reads and checks a configuration file: trusted (owner, mode, a regular file in a directory
/// nobody else may write), TOML, known keys, values of the right type that the options' parsers
/// accept.
pub(crate) fn read(path: &Path) -> anyhow::Result<FileConfig> {
    let text = hostkit_core::source::read_file(path)?;
    Ok(parse(&path.display().to_string(), &text)?)
}

fn parse(name: &str, text: &str) -> Result<FileConfig, Located> {
    let cmd = command();
    let keys = keys(cmd);
    let src = Source::new(name, text);
    let doc = ImDocument::parse(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim_end().replace('\n', "; ");
        src.error(Some(span), format!("TOML syntax error: {message}"))
    })?;
    let allowed: Vec<&str> = keys.iter().map(|k| k.long.as_str()).collect();
    let top = Fields::table(&src, &WORDING, doc.as_table(), WHAT, &allowed)?;
    let mut entries = Vec::new();
    for name in top.keys() {
        let key = keys
            .iter()
            .find(|k| k.long == name)
            .expect("checked against the keys");
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == key.id.as_str())
            .expect("a key is an argument");
        let value = top
            .value(name)?
            .expect("a key of the table has a value or a table");
        let values = match (key.shape, value) {
            (Shape::Flag, Value::Boolean(b)) => {
                entries.push(Entry {
                    id: key.id.clone(),
                    tokens: if *b.value() {
                        vec![format!("--{name}").into()]
                    } else {
                        Vec::new()
                    },
                    span: value.span(),
                    values: Vec::new(),
                });
                continue;
            }
            (Shape::Flag, _) => {
                return Err(top.at(name, format!("`{name}`: expected true or false")));
            }
            (Shape::One(ty), v) => vec![scalar(&top, name, ty, v)?],
            (Shape::List(ty), Value::Array(a)) => a
                .iter()
                .map(|v| scalar(&top, name, ty, v))
                .collect::<Result<_, _>>()?,
            (Shape::List(ty), v) => vec![scalar(&top, name, ty, v)?],
        };
        for (text, span) in &values {
            check_value(arg, arg.get_long().unwrap_or_default(), text)
                .map_err(|e| src.error(span.clone(), clap_message(&e)))?;
        }
        entries.push(Entry {
            id: key.id.clone(),
            tokens: values
                .iter()
                .map(|(v, _)| format!("--{name}={v}").into())
                .collect(),
            span: value.span(),
            values,
        });
    }
    Ok(FileConfig { src, entries })
}

/// Parses one value as the command line would (`--long=text`), with the option's own value
/// parser and name, apart from its relations to other options.
fn check_value(arg: &'static Arg, long: &'static str, text: &str) -> Result<(), clap::Error> {
    let mut one = Arg::new(arg.get_id().clone())
        .long(long)
        .value_parser(arg.get_value_parser().clone())
        .action(ArgAction::Set);
    if let Some(names) = arg.get_value_names() {
        one = one.value_names(names.to_vec());
    }
    Command::new("up")
        .no_binary_name(true)
        .arg(one)
        .try_get_matches_from([format!("--{long}={text}")])
        .map(|_| ())
}

/// A value of type `ty`, as the command line's text, with its span.
fn scalar(
    top: &Fields<'_>,
    key: &str,
    ty: Ty,
    v: &Value,
) -> Result<(String, Option<Range<usize>>), Located> {
    let text = match (ty, v) {
        (Ty::Integer, Value::Integer(i)) => i.value().to_string(),
        (Ty::Text, Value::String(s)) => s.value().clone(),
        (Ty::Integer, _) => {
            return Err(top
                .source()
                .error(v.span(), (WORDING.wrong_type)(WHAT, key, Expected::Integer)));
        }
        (Ty::Text, _) => {
            return Err(top
                .source()
                .error(v.span(), (WORDING.wrong_type)(WHAT, key, Expected::String)));
        }
    };
    Ok((text, v.span()))
}

impl FileConfig {
    fn entry(&self, id: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// `err` at the key of the file it is about: the first key (among `used`) whose option
    /// the message names (`--impair: …`), else the first whose removal makes the error go away
    /// or change (`retry`). In a list, the value the message quotes, if any.
    fn locate(
        &self,
        err: anyhow::Error,
        used: &[String],
        retry: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Error {
        let message = format!("{err:#}");
        let cmd = command();
        let named = mentioned_options(&message).into_iter().find_map(|long| {
            let arg = cmd.get_arguments().find(|a| a.get_long() == Some(long))?;
            let id = arg.get_id().as_str();
            used.iter().any(|u| u == id).then(|| id.to_string())
        });
        let culprit = named.or_else(|| {
            self.entries
                .iter()
                .filter(|e| used.contains(&e.id))
                .find(|e| retry(&e.id).as_deref() != Some(message.as_str()))
                .map(|e| e.id.clone())
        });
        let Some(entry) = culprit.and_then(|id| self.entry(&id)) else {
            return err.context(format!("with the configuration {}", self.src.name));
        };
        let span = entry
            .values
            .iter()
            .find(|(v, _)| !v.is_empty() && message.contains(v.as_str()))
            .and_then(|(_, s)| s.clone())
            .or_else(|| entry.span.clone());
        anyhow!(self.src.error(span, message))
    }
}

/// The long options a message names (`--impair`, `--addr0`), in order.
fn mentioned_options(message: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = message;
    while let Some(at) = rest.find("--") {
        let after = &rest[at + 2..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(after.len());
        if end > 0 {
            out.push(&after[..end]);
        }
        rest = &after[end..];
    }
    out
}

/// Whether an option was given on the command line or in the environment.
pub(crate) fn given(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches
            .try_get_raw(id)
            .ok()
            .flatten()
            .map(|_| matches.value_source(id)),
        Some(Some(ValueSource::CommandLine | ValueSource::EnvVariable))
    )
}

/// The command-line tokens of an option given on the command line (or in the environment).
fn tokens_of(matches: &ArgMatches, arg: &Arg) -> Vec<OsString> {
    let id = arg.get_id().as_str();
    let Some(long) = arg.get_long() else {
        return Vec::new();
    };
    if !given(matches, id) {
        return Vec::new();
    }
    if matches!(arg.get_action(), ArgAction::SetTrue) {
        return if matches.get_flag(id) {
            vec![format!("--{long}").into()]
        } else {
            Vec::new()
        };
    }
    matches
        .get_raw(id)
        .into_iter()
        .flatten()
        .map(|v| {
            let mut t = OsString::from(format!("--{long}="));
            t.push(v);
            t
        })
        .collect()
}

/// `tun up`'s options as they take effect, and where they came from.
#[derive(Debug)]
pub(crate) struct Effective {
    /// The options (`config` cleared: the file is applied).
    pub args: UpArgs,
    /// `tun up`'s parse of them: an option given (command line, environment or file) is
    /// explicit, the others are at their defaults.
    matches: ArgMatches,
}

/// Whether [`effective`] checks the whole as `up` would (capture path, filters, impairment,
/// addresses), or only each value (what `tun down` needs: the names, table and place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// Everything `up` checks before it changes anything.
    Full,
    /// Each value, and the options' relations (conflicts, requirements).
    Values,
}

/// `args` (parsed from `matches`, a command line with `tun up`'s options) as they take effect:
/// the command line and the environment over the `--config` file over the defaults.
pub(crate) fn effective(
    args: UpArgs,
    matches: &ArgMatches,
    check: Check,
) -> anyhow::Result<Effective> {
    let file = args.config.as_deref().map(read).transpose()?;
    let cmd = command();
    let mut used = Vec::new();
    let mut argv: Vec<(String, Vec<OsString>)> = Vec::new();
    for arg in cmd.get_arguments() {
        let id = arg.get_id().to_string();
        let cli = tokens_of(matches, arg);
        let from_file = arg
            .get_long()
            .is_some_and(|l| !COMMAND_LINE_ONLY.contains(&l))
            && !given(matches, &id);
        match file.as_ref().and_then(|f| f.entry(&id)) {
            Some(entry) if from_file => {
                used.push(id.clone());
                argv.push((id, entry.tokens.clone()));
            }
            _ => argv.push((id, cli)),
        }
    }
    let attempt = |skip: Option<&str>| -> anyhow::Result<Effective> {
        let tokens = argv
            .iter()
            .filter(|(id, _)| Some(id.as_str()) != skip)
            .flat_map(|(_, t)| t.iter().cloned());
        let matches = command()
            .clone()
            .try_get_matches_from(std::iter::once(OsString::from("up")).chain(tokens))
            .map_err(|e| anyhow!(clap_message(&e)))?;
        let mut args = UpArgs::from_arg_matches(&matches).map_err(|e| anyhow!(clap_message(&e)))?;
        if check == Check::Full {
            args.check()?;
        }
        args.config = None;
        Ok(Effective { args, matches })
    };
    match (attempt(None), &file) {
        (Ok(e), _) => Ok(e),
        (Err(e), None) => Err(e),
        (Err(e), Some(file)) => Err(file.locate(e, &used, |id| {
            attempt(Some(id)).err().map(|e| format!("{e:#}"))
        })),
    }
}

/// `args` with the `--config` file applied (nothing to do without one); see [`effective`].
pub(crate) fn resolve(args: UpArgs, matches: &ArgMatches) -> anyhow::Result<UpArgs> {
    if args.config.is_none() {
        return Ok(args);
    }
    Ok(effective(args, matches, Check::Full)?.args)
}

/// The options a configuration file gives `tun down` (its devices, table and place), with the
/// command line's `given` ones kept.
pub(crate) fn for_down(path: &Path) -> anyhow::Result<UpArgs> {
    let argv = [OsStr::new("up"), OsStr::new("--config"), path.as_os_str()];
    let matches = command()
        .clone()
        .try_get_matches_from(argv)
        .map_err(|e| anyhow!(clap_message(&e)))?;
    let args = UpArgs::from_arg_matches(&matches).map_err(|e| anyhow!(clap_message(&e)))?;
    Ok(effective(args, &matches, Check::Values)?.args)
}

impl Effective {
    /// The configuration as a file `--config` reads back to the same: every key, each with its
    /// help; a value given (command line, environment, file) set, a default as a comment.
    pub(crate) fn to_toml(&self) -> String {
        let cmd = command();
        let mut out = String::from(
            "# hostkit tun up --config FILE: the options of `tun up`, a key per long option.\n\
             # Options given on the command line override the file; commented keys are defaults.\n",
        );
        for key in keys(cmd) {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_id() == key.id.as_str())
                .expect("a key is an argument");
            out.push('\n');
            if let Some(help) = arg.get_help() {
                for line in wrap(&help.to_string(), 98) {
                    out.push_str(&format!("# {line}\n"));
                }
            }
            let explicit = matches!(
                self.matches.value_source(&key.id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            let raw: Vec<String> = self
                .matches
                .get_raw(&key.id)
                .into_iter()
                .flatten()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let value = match key.shape {
                Shape::Flag => Some(self.matches.get_flag(&key.id).to_string()),
                Shape::One(ty) => raw.first().map(|v| toml_value(ty, v)),
                Shape::List(ty) => Some(format!(
                    "[{}]",
                    raw.iter()
                        .map(|v| toml_value(ty, v))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            };
            let name = &key.long;
            match value {
                Some(v) if explicit => out.push_str(&format!("{name} = {v}\n")),
                Some(v) => out.push_str(&format!("# {name} = {v}\n")),
                None => {
                    let placeholder = arg
                        .get_value_names()
                        .and_then(|n| n.first())
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "VALUE".into());
                    out.push_str(&format!("# {name} = {placeholder}\n"));
                }
            }
        }
        out
    }
}

/// A value as TOML: an integer, or a basic string (`"…"`, escaped).
fn toml_value(ty: Ty, raw: &str) -> String {
    if ty == Ty::Integer
        && let Ok(i) = raw.parse::<i64>()
    {
        return i.to_string();
    }
    let mut out = String::from('"');
    for c in raw.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `text` in lines of at most `width` characters (words kept whole).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for para in text.lines() {
        let mut line = String::new();
        for word in para.split_whitespace() {
            if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every long option of `tun up` is a key, but the command-line-only ones: a new option
    /// cannot be forgotten, nor one whose kind the file cannot express.
    #[test]
    fn every_long_option_of_up_is_a_key() {
        let cmd = command();
        let keys: Vec<String> = keys(cmd).into_iter().map(|k| k.long).collect();
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else {
                panic!(
                    "{:?} has no long option: the file cannot name it",
                    arg.get_id()
                );
            };
            if long == "help" || COMMAND_LINE_ONLY.contains(&long) {
                continue;
            }
            assert!(
                keys.iter().any(|k| k == long),
                "--{long} has no key in the configuration file (action {:?})",
                arg.get_action()
            );
        }
        for only in COMMAND_LINE_ONLY {
            assert!(
                cmd.get_arguments().any(|a| a.get_long() == Some(only)),
                "{only} is not an option of tun up any more"
            );
        }
    }

    #[test]
    fn shapes_follow_the_options() {
        let cmd = command();
        let shape_of = |long: &str| {
            keys(cmd)
                .into_iter()
                .find(|k| k.long == long)
                .unwrap()
                .shape
        };
        assert_eq!(shape_of("no-routing"), Shape::Flag);
        assert_eq!(shape_of("table"), Shape::One(Ty::Integer));
        assert_eq!(shape_of("nice"), Shape::One(Ty::Integer));
        assert_eq!(shape_of("engine"), Shape::One(Ty::Text));
        assert_eq!(shape_of("run-dir"), Shape::One(Ty::Text));
        assert_eq!(shape_of("addr0"), Shape::List(Ty::Text));
        assert_eq!(shape_of("impair"), Shape::List(Ty::Text));
    }

    fn err(text: &str) -> String {
        parse("t.toml", text).unwrap_err().to_string()
    }

    #[test]
    fn values_are_checked_where_they_are() {
        assert_eq!(
            err("table = 13\nnice = 300\n"),
            "t.toml:2:8: invalid value '300' for '--nice <NICE>': 300 is not in -20..=19"
        );
        let e = err("engine = \"turbo\"\n");
        assert!(
            e.starts_with("t.toml:1:10: invalid value 'turbo' for '--engine <ENGINE>'"),
            "{e}"
        );
        assert!(e.contains("fast, simple"), "{e}");
        assert_eq!(
            err("addr0 = [\"10.0.0.1\", \"fd00::1x\"]\n"),
            "t.toml:1:22: invalid value 'fd00::1x' for '--addr0 <ADDR>': invalid IP address syntax"
        );
        assert_eq!(
            err("table = \"13\"\n"),
            "t.toml:1:9: `table`: expected an integer"
        );
        assert_eq!(err("dev0 = 7\n"), "t.toml:1:8: `dev0`: expected a string");
        assert_eq!(
            err("no-routing = 1\n"),
            "t.toml:1:14: `no-routing`: expected true or false"
        );
        let e = err("\n  tabel = 13\n");
        assert!(
            e.starts_with("t.toml:2:3: unknown key `tabel`; allowed keys"),
            "{e}"
        );
        assert!(e.contains("table") && e.contains("coalesce-us"), "{e}");
        let e = err("dry-run = true\n");
        assert!(e.starts_with("t.toml:1:1: unknown key `dry-run`"), "{e}");
        let e = err("[pcap]\nfile = 'x'\n");
        assert!(
            e.contains("unknown key `pcap`") || e.contains("not a table"),
            "{e}"
        );
        let e = err("table = \n");
        assert!(e.starts_with("t.toml:1:9: TOML syntax error"), "{e}");
    }

    #[test]
    fn a_list_takes_one_value_too() {
        let f = parse("t.toml", "impair = 'loss 1%'\naddr0 = []\n").unwrap();
        assert_eq!(
            f.entries[0].tokens,
            vec![OsString::from("--impair=loss 1%")]
        );
        assert!(f.entries[1].tokens.is_empty());
    }

    #[test]
    fn printed_strings_read_back() {
        for s in [
            "plain",
            "it's \"x\"",
            "back\\slash",
            "tab\tnew\nline",
            "\u{1}\u{7f}",
            "ü",
        ] {
            let doc = ImDocument::parse(format!("k = {}", toml_value(Ty::Text, s))).unwrap();
            assert_eq!(doc["k"].as_str(), Some(s));
        }
        assert_eq!(toml_value(Ty::Integer, "-5"), "-5");
    }

    #[test]
    fn mentions() {
        assert_eq!(
            mentioned_options("--impair: bad; give --addr0 and --addr1, not --"),
            vec!["impair", "addr0", "addr1"]
        );
    }
}

//! The rule parser: a rule file is TOML, read with `hostkit_core::toml` (strict, with spans)
//! so that every error points at the line and column of the offending key or value.

use hostkit_core::toml::{Expected, Located, Wording};
use hostkit_core::{Braces, Template, TemplateError};
use regex::Regex;
use toml_edit::{ImDocument, Table};

use super::{Applied, Edit, Marker, Matcher, Require, Rule, Warning};
use crate::error::RuleError;
use crate::glob::FilePattern;
use crate::params::{CmpOp, Condition, ParamKind, ParamSpec, ParamValue};

type Fields<'a> = hostkit_core::toml::Fields<'a, Located>;
type Source = hostkit_core::toml::Source<Located>;

/// How rule files word the strict reader's messages: the key first, the table only where it
/// helps.
static WORDING: Wording = Wording {
    unknown_key: |what, key, allowed| {
        format!("unknown key `{key}` in {what}; allowed keys: {allowed}")
    },
    wrong_type: |what, key, expected| match expected {
        Expected::String => format!("`{key}` must be a string"),
        Expected::Integer => format!("`{key}` must be an integer"),
        Expected::Strings | Expected::StringInArray | Expected::StringOrStrings => {
            format!("`{key}` must be an array of strings")
        }
        Expected::Value => format!("`{key}` must be a value, not a table"),
        Expected::Table => format!("`{what}` must be a table (write it as [{what}])"),
        Expected::Tables => format!("`{key}` must be written as [[{key}]] tables"),
    },
    missing: |what, key| format!("{what} needs a `{key}` key"),
    empty: |_, key| format!("`{key}` must not be empty"),
};

const TOP_KEYS: &[&str] = &[
    "name",
    "summary",
    "recipe",
    "applies_to",
    "history",
    "references",
    "params",
    "warnings",
    "edits",
    "not_applicable",
];
const PARAM_KEYS: &[&str] = &["description", "type", "default", "min", "max", "pattern"];
const WARNING_KEYS: &[&str] = &["when", "edits", "text"];
const EDIT_KEYS: &[&str] = &[
    "id",
    "description",
    "files",
    "find",
    "find_regex",
    "replace",
    "applied",
    "applied_regex",
    "expect",
    "require",
    "one_of",
    "count",
];
const MARKER_KEYS: &[&str] = &["files", "find", "find_regex", "reason"];

/// Parses one rule file. `file` names it in errors; the rule's `name` must equal its stem.
pub fn parse_rule(file: &str, text: &str) -> Result<Rule, RuleError> {
    let src = Source::new(file, text);
    let doc = ImDocument::parse(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim_end().replace('\n', "; ");
        src.error(Some(span), format!("TOML syntax error: {message}"))
    })?;
    let top = Fields::table(&src, &WORDING, doc.as_table(), "the rule file", TOP_KEYS)?;

    let name = top.required_nonblank("name")?;
    let stem = std::path::Path::new(file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if name != stem || !valid_ident(&name, true) {
        return Err(top.at(
            "name",
            format!(
                "`name = \"{name}\"` must be the file's name without `.toml` (`{stem}`), made of a-z, 0-9 and `-`"
            ),
        ));
    }
    let summary = top.required_nonblank("summary")?;
    let recipe = opt_str(&top, "recipe")?;
    let applies_to = top.string_array("applies_to")?.unwrap_or_default();
    let history = opt_str(&top, "history")?.unwrap_or_default();
    let references = top.string_array("references")?.unwrap_or_default();

    let mut params = Vec::new();
    if let Some(item) = top.get("params") {
        let table = Fields::unchecked(&src, &WORDING, item, "params")?;
        for (pname, key_span) in table.keys_with_spans() {
            if !valid_ident(pname, false) {
                return Err(src.error(
                    key_span,
                    format!("parameter name `{pname}` must be made of a-z, 0-9 and `_`"),
                ));
            }
            let Some(pitem) = table.get(pname) else {
                continue;
            };
            let ptable = Fields::unchecked(&src, &WORDING, pitem, &format!("params.{pname}"))?;
            params.push(param(pname, &ptable)?);
        }
    }
    let names: Vec<String> = params.iter().map(|p| p.name.clone()).collect();

    let mut warnings = Vec::new();
    let mut warning_spans = Vec::new();
    for wt in top.tables("warnings")? {
        let wt = Fields::table(&src, &WORDING, wt, "[[warnings]]", WARNING_KEYS)?;
        let text = wt.required_nonblank("text")?;
        let when = match opt_str(&wt, "when")? {
            None => None,
            Some(w) => Some(Condition::parse(&w, &params).map_err(|m| wt.at("when", m))?),
        };
        let edit_ids = wt.string_array("edits")?.unwrap_or_default();
        warnings.push(Warning {
            when,
            edits: edit_ids,
            text,
        });
        warning_spans.push(wt.value_span("edits"));
    }

    let mut edits: Vec<Edit> = Vec::new();
    for et in top.tables("edits")? {
        let edit = edit(&src, et, &names)?;
        if edits.iter().any(|e| e.id == edit.id) {
            return Err(src.error(
                Fields::table(&src, &WORDING, et, "[[edits]]", EDIT_KEYS)?.value_span("id"),
                format!("two edits have the id `{}`", edit.id),
            ));
        }
        edits.push(edit);
    }
    if edits.is_empty() {
        return Err(src.error(Some(0..0), "a rule needs at least one [[edits]] table"));
    }
    for (w, span) in warnings.iter().zip(warning_spans) {
        if let Some(bad) = w
            .edits
            .iter()
            .find(|id| !edits.iter().any(|e| &e.id == *id))
        {
            return Err(src.error(
                span,
                format!("warning names edit `{bad}`, which this rule does not have"),
            ));
        }
    }

    let mut not_applicable = Vec::new();
    for mt in top.tables("not_applicable")? {
        let mt = Fields::table(&src, &WORDING, mt, "[[not_applicable]]", MARKER_KEYS)?;
        not_applicable.push(Marker {
            files: files(&mt)?,
            find: matcher(&mt)?,
            reason: mt.required_nonblank("reason")?,
        });
    }

    Ok(Rule {
        name,
        file: file.to_string(),
        summary,
        recipe,
        applies_to,
        history,
        references,
        params,
        warnings,
        edits,
        not_applicable,
    })
}

fn valid_ident(s: &str, dash: bool) -> bool {
    !s.is_empty()
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || (if dash { c == '-' } else { c == '_' })
        })
}

/// A string value, if present (a table there is refused as such, not as "not a string").
fn opt_str(f: &Fields<'_>, key: &str) -> Result<Option<String>, RuleError> {
    f.value(key)?;
    f.string(key)
}

fn param(name: &str, t: &Fields<'_>) -> Result<ParamSpec, RuleError> {
    let t = t.with_what(format!("[params.{name}]"));
    t.check_keys(PARAM_KEYS)?;
    let description = t.required_nonblank("description")?;
    let ty = t.required_nonblank("type")?;
    let kind = match ty.as_str() {
        "integer" => {
            if t.has("pattern") {
                return Err(t.source().error(
                    t.key_span("pattern"),
                    format!("`pattern` is for string parameters; `{name}` is an integer"),
                ));
            }
            let min = t.integer("min")?;
            let max = t.integer("max")?;
            if let (Some(lo), Some(hi)) = (min, max)
                && lo > hi
            {
                return Err(t.at("max", format!("`max` ({hi}) is below `min` ({lo})")));
            }
            ParamKind::Integer { min, max }
        }
        "string" => {
            for key in ["min", "max"] {
                if t.has(key) {
                    return Err(t.source().error(
                        t.key_span(key),
                        format!("`{key}` is for integer parameters; `{name}` is a string"),
                    ));
                }
            }
            let pattern = match opt_str(&t, "pattern")? {
                None => None,
                Some(p) => Some(
                    Regex::new(&p).map_err(|e| t.at("pattern", format!("bad `pattern`: {e}")))?,
                ),
            };
            ParamKind::String { pattern }
        }
        other => {
            return Err(t.at(
                "type",
                format!("unknown parameter type `{other}`; allowed types: integer, string"),
            ));
        }
    };
    let default = match t.value("default")? {
        None => return Err(t.at_table(format!("{} needs a `default` key", t.what()))),
        Some(toml_edit::Value::Integer(i)) => ParamValue::Integer(*i.value()),
        Some(toml_edit::Value::String(s)) => ParamValue::String(s.value().clone()),
        Some(_) => return Err(t.at("default", "`default` must be an integer or a string")),
    };
    let spec = ParamSpec {
        name: name.to_string(),
        description,
        kind,
        default: default.clone(),
    };
    spec.check(&default.to_string())
        .map_err(|reason| t.at("default", format!("bad `default`: {reason}")))?;
    Ok(spec)
}

fn files(t: &Fields<'_>) -> Result<Vec<FilePattern>, RuleError> {
    let Some(list) = t.string_array("files")? else {
        return Err(t.at_table(format!("{} needs a `files` key", t.what())));
    };
    if list.is_empty() {
        return Err(t.at("files", "`files` must not be empty"));
    }
    list.iter()
        .map(|p| FilePattern::new(p).map_err(|m| t.at("files", m)))
        .collect()
}

fn matcher(t: &Fields<'_>) -> Result<Matcher, RuleError> {
    let what = t.what();
    match (opt_str(t, "find")?, opt_str(t, "find_regex")?) {
        (Some(_), Some(_)) => Err(t.source().error(
            t.key_span("find_regex"),
            format!("{what} has both `find` and `find_regex`; give one"),
        )),
        (None, None) => Err(t.at_table(format!(
            "{what} needs `find` (literal text) or `find_regex`"
        ))),
        (Some(lit), None) if lit.is_empty() => Err(t.at("find", "`find` must not be empty")),
        (Some(lit), None) => Ok(Matcher::Literal(lit)),
        (None, Some(re)) => Regex::new(&re)
            .map(Matcher::Regex)
            .map_err(|e| t.at("find_regex", format!("bad `find_regex`: {e}"))),
    }
}

/// A replacement template: `{param}` must name one of `params`.
fn template(
    t: &Fields<'_>,
    key: &str,
    text: &str,
    params: &[String],
) -> Result<Template, RuleError> {
    Template::parse(text, Braces::Source, |n| params.iter().any(|p| p == n)).map_err(|e| match e {
        TemplateError::Unknown { name } => t.at(
            key,
            format!(
                "`{{{name}}}` names no parameter of this rule (write `{{{{` for a literal brace)"
            ),
        ),
        other => t.at(key, other.to_string()),
    })
}

fn edit(src: &Source, table: &Table, params: &[String]) -> Result<Edit, RuleError> {
    let t = Fields::table(src, &WORDING, table, "[[edits]]", EDIT_KEYS)?;
    let id = t.required_nonblank("id")?;
    let t = t.with_what(format!("edit `{id}`"));
    let what = t.what().to_string();
    let description = t.required_nonblank("description")?;
    let files = files(&t)?;
    let find = matcher(&t)?;
    let Some(replace) = opt_str(&t, "replace")? else {
        return Err(t.at_table(format!("{what} needs a `replace` key")));
    };
    let replace = template(&t, "replace", &replace, params)?;
    let applied = match (opt_str(&t, "applied")?, opt_str(&t, "applied_regex")?) {
        (Some(_), Some(_)) => {
            return Err(src.error(
                t.key_span("applied_regex"),
                format!("{what} has both `applied` and `applied_regex`; give one"),
            ));
        }
        (Some(a), None) => Some(Applied::Literal(template(&t, "applied", &a, params)?)),
        (None, Some(r)) => {
            Some(Applied::Regex(Regex::new(&r).map_err(|e| {
                t.at("applied_regex", format!("bad `applied_regex`: {e}"))
            })?))
        }
        (None, None) => None,
    };
    let expect = match opt_str(&t, "expect")? {
        Some(e) => e,
        None => match &find {
            Matcher::Literal(l) => format!("`{}`", l.trim()),
            Matcher::Regex(r) => format!("text matching /{}/", r.as_str()),
        },
    };
    let require = match opt_str(&t, "require")?.as_deref() {
        None | Some("each-file") => Require::EachFile,
        Some("any-file") => Require::AnyFile,
        Some("optional") => Require::Optional,
        Some(other) => {
            return Err(t.at(
                "require",
                format!("unknown `require = \"{other}\"`; allowed: each-file, any-file, optional"),
            ));
        }
    };
    let count = match t.integer("count")? {
        None => None,
        Some(n) if n >= 1 => Some(n as usize),
        Some(_) => return Err(t.at("count", "`count` must be at least 1")),
    };
    Ok(Edit {
        id,
        description,
        files,
        find,
        replace,
        applied,
        expect,
        require,
        one_of: opt_str(&t, "one_of")?,
        count,
    })
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
        };
        write!(f, "{} {op} {}", self.param, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_rule;

    const EDIT: &str = "[[edits]]\nid = \"e\"\ndescription = \"d\"\nfiles = [\"a.c\"]\nfind = \"x\"\nreplace = \"y\"\n";

    fn err(text: &str) -> (usize, usize, String) {
        let e = parse_rule("patches/r.toml", text).expect_err("must fail");
        assert_eq!(e.file, "patches/r.toml");
        (e.line, e.column, e.message)
    }

    #[test]
    fn a_minimal_rule_parses() {
        let rule = parse_rule("r.toml", &format!("name = \"r\"\nsummary = \"s\"\n{EDIT}"))
            .expect("parses");
        assert_eq!(rule.name(), "r");
        assert_eq!(rule.file_patterns(), ["a.c"]);
        assert!(rule.params().is_empty());
    }

    #[test]
    fn unknown_keys_point_at_the_key_and_list_the_allowed_ones() {
        let (line, col, msg) = err(&format!(
            "name = \"r\"\nsummary = \"s\"\n{EDIT}  colour = 1\n"
        ));
        assert_eq!((line, col), (9, 3));
        assert!(
            msg.starts_with(
                "unknown key `colour` in [[edits]]; allowed keys: id, description, files,"
            ),
            "{msg}"
        );

        let (line, col, msg) = err(&format!(
            "name = \"r\"\nsummary = \"s\"\n[params.n]\ndescription = \"n\"\ntype = \"integer\"\ndefault = 1\nmaximum = 3\n{EDIT}"
        ));
        assert_eq!((line, col), (7, 1));
        assert_eq!(
            msg,
            "unknown key `maximum` in [params.n]; allowed keys: description, type, default, min, max, pattern"
        );
    }

    #[test]
    fn wrong_types_and_values_are_located() {
        let (line, col, msg) = err(&format!("name = \"r\"\nsummary = 3\n{EDIT}"));
        assert_eq!(
            (line, col, msg.as_str()),
            (2, 11, "`summary` must be a string")
        );

        let (line, col, msg) = err(
            "name = \"r\"\nsummary = \"s\"\n[[edits]]\nid = \"e\"\ndescription = \"d\"\nfiles = \"a.c\"\nfind = \"x\"\nreplace = \"y\"\n",
        );
        assert_eq!(
            (line, col, msg.as_str()),
            (6, 9, "`files` must be an array of strings")
        );

        let (line, _, msg) = err(&format!(
            "name = \"r\"\nsummary = \"s\"\n[params.n]\ndescription = \"n\"\ntype = \"integer\"\ndefault = 9\nmin = 1\nmax = 5\n{EDIT}"
        ));
        assert_eq!(line, 6);
        assert_eq!(
            msg,
            "bad `default`: out of range: expected an integer 1..=5"
        );

        let (line, _, msg) = err(&format!(
            "name = \"r\"\nsummary = \"s\"\n[[warnings]]\nwhen = \"n > 3\"\ntext = \"t\"\n{EDIT}"
        ));
        assert_eq!(line, 4);
        assert_eq!(msg, "`when`: no parameter `n` (declare it under [params])");

        let (line, _, msg) = err(&format!(
            "name = \"r\"\nsummary = \"s\"\n[[warnings]]\nedits = [\"nope\"]\ntext = \"t\"\n{EDIT}"
        ));
        assert_eq!(line, 4);
        assert_eq!(
            msg,
            "warning names edit `nope`, which this rule does not have"
        );
    }

    #[test]
    fn structural_mistakes_are_refused() {
        let (_, _, msg) = err("name = \"r\"\nsummary = \"s\"\n");
        assert_eq!(msg, "a rule needs at least one [[edits]] table");

        let (_, _, msg) = err(&format!("name = \"r\"\nsummary = \"s\"\n{EDIT}{EDIT}"));
        assert_eq!(msg, "two edits have the id `e`");

        let (line, _, msg) = err(
            "name = \"r\"\nsummary = \"s\"\n[[edits]]\nid = \"e\"\ndescription = \"d\"\nfiles = [\"/etc/x\"]\nfind = \"x\"\nreplace = \"y\"\n",
        );
        assert_eq!(line, 6);
        assert_eq!(
            msg,
            "file pattern `/etc/x` must be relative to the source directory"
        );

        let (_, _, msg) = err(
            "name = \"r\"\nsummary = \"s\"\n[[edits]]\nid = \"e\"\ndescription = \"d\"\nfiles = [\"a.c\"]\nfind = \"x\"\nfind_regex = \"x\"\nreplace = \"y\"\n",
        );
        assert_eq!(msg, "edit `e` has both `find` and `find_regex`; give one");

        let (_, _, msg) = err("name = \"r\"\nsummary = \"s\"\nedits = 1\n");
        assert_eq!(msg, "`edits` must be written as [[edits]] tables");
    }
}

//! The rule parser: a rule file is TOML, read with `toml_edit` so that every error can point
//! at the line and column of the offending key or value.

use std::ops::Range;

use regex::Regex;
use toml_edit::{ArrayOfTables, ImDocument, Item, Table, Value};

use super::{Applied, Edit, Marker, Matcher, Require, Rule, Warning};
use crate::error::RuleError;
use crate::glob::FilePattern;
use crate::params::{CmpOp, Condition, ParamKind, ParamSpec, ParamValue, Template};

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
    let cx = Cx { file, src: text };
    let doc = ImDocument::parse(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim_end().replace('\n', "; ");
        cx.err(Some(span), format!("TOML syntax error: {message}"))
    })?;
    let top = doc.as_table();
    cx.check_keys(top, TOP_KEYS, "the rule file")?;

    let name = cx.req_str(top, "name", "the rule file")?;
    let stem = std::path::Path::new(file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if name != stem || !valid_ident(&name, true) {
        return Err(cx.err(
            cx.value_span(top, "name"),
            format!(
                "`name = \"{name}\"` must be the file's name without `.toml` (`{stem}`), made of a-z, 0-9 and `-`"
            ),
        ));
    }
    let summary = cx.req_str(top, "summary", "the rule file")?;
    let recipe = cx.opt_str(top, "recipe")?;
    let applies_to = cx.str_array(top, "applies_to")?.unwrap_or_default();
    let history = cx.opt_str(top, "history")?.unwrap_or_default();
    let references = cx.str_array(top, "references")?.unwrap_or_default();

    let mut params = Vec::new();
    if let Some(item) = top.get("params") {
        let table = cx.table(item, "params")?;
        for (pname, pitem) in table.iter() {
            let key_span = table.key(pname).and_then(|k| k.span());
            if !valid_ident(pname, false) {
                return Err(cx.err(
                    key_span,
                    format!("parameter name `{pname}` must be made of a-z, 0-9 and `_`"),
                ));
            }
            let ptable = cx.table(pitem, &format!("params.{pname}"))?;
            params.push(cx.param(pname, ptable)?);
        }
    }
    let names: Vec<String> = params.iter().map(|p| p.name.clone()).collect();

    let mut warnings = Vec::new();
    let mut warning_spans = Vec::new();
    for wt in cx.tables(top, "warnings")? {
        cx.check_keys(wt, WARNING_KEYS, "[[warnings]]")?;
        let text = cx.req_str(wt, "text", "[[warnings]]")?;
        let when = match cx.opt_str(wt, "when")? {
            None => None,
            Some(w) => Some(
                Condition::parse(&w, &params).map_err(|m| cx.err(cx.value_span(wt, "when"), m))?,
            ),
        };
        let edit_ids = cx.str_array(wt, "edits")?.unwrap_or_default();
        warnings.push(Warning {
            when,
            edits: edit_ids,
            text,
        });
        warning_spans.push(cx.value_span(wt, "edits"));
    }

    let mut edits: Vec<Edit> = Vec::new();
    for et in cx.tables(top, "edits")? {
        let edit = cx.edit(et, &names)?;
        if edits.iter().any(|e| e.id == edit.id) {
            return Err(cx.err(
                cx.value_span(et, "id"),
                format!("two edits have the id `{}`", edit.id),
            ));
        }
        edits.push(edit);
    }
    if edits.is_empty() {
        return Err(cx.err(
            Some(0..0),
            "a rule needs at least one [[edits]] table".into(),
        ));
    }
    for (w, span) in warnings.iter().zip(warning_spans) {
        if let Some(bad) = w
            .edits
            .iter()
            .find(|id| !edits.iter().any(|e| &e.id == *id))
        {
            return Err(cx.err(
                span,
                format!("warning names edit `{bad}`, which this rule does not have"),
            ));
        }
    }

    let mut not_applicable = Vec::new();
    for mt in cx.tables(top, "not_applicable")? {
        cx.check_keys(mt, MARKER_KEYS, "[[not_applicable]]")?;
        not_applicable.push(Marker {
            files: cx.files(mt, "[[not_applicable]]")?,
            find: cx.matcher(mt, "[[not_applicable]]")?,
            reason: cx.req_str(mt, "reason", "[[not_applicable]]")?,
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

struct Cx<'a> {
    file: &'a str,
    src: &'a str,
}

impl Cx<'_> {
    fn err(&self, span: Option<Range<usize>>, message: String) -> RuleError {
        let offset = span.map(|s| s.start).unwrap_or(0).min(self.src.len());
        let before = self.src.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        RuleError {
            file: self.file.to_string(),
            line,
            column,
            message,
        }
    }

    fn key_span(&self, table: &Table, key: &str) -> Option<Range<usize>> {
        table
            .key(key)
            .and_then(|k| k.span())
            .or_else(|| table.span())
    }

    fn value_span(&self, table: &Table, key: &str) -> Option<Range<usize>> {
        table
            .get(key)
            .and_then(|i| i.span())
            .or_else(|| self.key_span(table, key))
    }

    fn check_keys(&self, table: &Table, allowed: &[&str], what: &str) -> Result<(), RuleError> {
        for (key, _) in table.iter() {
            if !allowed.contains(&key) {
                return Err(self.err(
                    self.key_span(table, key),
                    format!(
                        "unknown key `{key}` in {what}; allowed keys: {}",
                        allowed.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    fn value<'t>(&self, table: &'t Table, key: &str) -> Result<Option<&'t Value>, RuleError> {
        match table.get(key) {
            None => Ok(None),
            Some(Item::Value(v)) => Ok(Some(v)),
            Some(_) => Err(self.err(
                self.key_span(table, key),
                format!("`{key}` must be a value, not a table"),
            )),
        }
    }

    fn opt_str(&self, table: &Table, key: &str) -> Result<Option<String>, RuleError> {
        match self.value(table, key)? {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.value().clone())),
            Some(_) => Err(self.err(
                self.value_span(table, key),
                format!("`{key}` must be a string"),
            )),
        }
    }

    fn req_str(&self, table: &Table, key: &str, what: &str) -> Result<String, RuleError> {
        match self.opt_str(table, key)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            Some(_) => Err(self.err(
                self.value_span(table, key),
                format!("`{key}` must not be empty"),
            )),
            None => Err(self.err(table.span(), format!("{what} needs a `{key}` key"))),
        }
    }

    fn opt_int(&self, table: &Table, key: &str) -> Result<Option<i64>, RuleError> {
        match self.value(table, key)? {
            None => Ok(None),
            Some(Value::Integer(i)) => Ok(Some(*i.value())),
            Some(_) => Err(self.err(
                self.value_span(table, key),
                format!("`{key}` must be an integer"),
            )),
        }
    }

    fn str_array(&self, table: &Table, key: &str) -> Result<Option<Vec<String>>, RuleError> {
        match self.value(table, key)? {
            None => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.value().clone()),
                    other => {
                        Err(self.err(other.span(), format!("`{key}` must be an array of strings")))
                    }
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(self.err(
                self.value_span(table, key),
                format!("`{key}` must be an array of strings"),
            )),
        }
    }

    fn table<'t>(&self, item: &'t Item, what: &str) -> Result<&'t Table, RuleError> {
        item.as_table().ok_or_else(|| {
            self.err(
                item.span(),
                format!("`{what}` must be a table (write it as [{what}])"),
            )
        })
    }

    fn tables<'t>(&self, top: &'t Table, key: &str) -> Result<Vec<&'t Table>, RuleError> {
        match top.get(key) {
            None => Ok(Vec::new()),
            Some(Item::ArrayOfTables(a)) => Ok(tables_of(a)),
            Some(_) => Err(self.err(
                self.key_span(top, key),
                format!("`{key}` must be written as [[{key}]] tables"),
            )),
        }
    }

    fn param(&self, name: &str, t: &Table) -> Result<ParamSpec, RuleError> {
        let what = format!("[params.{name}]");
        self.check_keys(t, PARAM_KEYS, &what)?;
        let description = self.req_str(t, "description", &what)?;
        let ty = self.req_str(t, "type", &what)?;
        let kind = match ty.as_str() {
            "integer" => {
                for key in ["pattern"] {
                    if t.contains_key(key) {
                        return Err(self.err(
                            self.key_span(t, key),
                            format!("`{key}` is for string parameters; `{name}` is an integer"),
                        ));
                    }
                }
                let min = self.opt_int(t, "min")?;
                let max = self.opt_int(t, "max")?;
                if let (Some(lo), Some(hi)) = (min, max)
                    && lo > hi
                {
                    return Err(self.err(
                        self.value_span(t, "max"),
                        format!("`max` ({hi}) is below `min` ({lo})"),
                    ));
                }
                ParamKind::Integer { min, max }
            }
            "string" => {
                for key in ["min", "max"] {
                    if t.contains_key(key) {
                        return Err(self.err(
                            self.key_span(t, key),
                            format!("`{key}` is for integer parameters; `{name}` is a string"),
                        ));
                    }
                }
                let pattern = match self.opt_str(t, "pattern")? {
                    None => None,
                    Some(p) => Some(Regex::new(&p).map_err(|e| {
                        self.err(self.value_span(t, "pattern"), format!("bad `pattern`: {e}"))
                    })?),
                };
                ParamKind::String { pattern }
            }
            other => {
                return Err(self.err(
                    self.value_span(t, "type"),
                    format!("unknown parameter type `{other}`; allowed types: integer, string"),
                ));
            }
        };
        let default = match self.value(t, "default")? {
            None => return Err(self.err(t.span(), format!("{what} needs a `default` key"))),
            Some(Value::Integer(i)) => ParamValue::Integer(*i.value()),
            Some(Value::String(s)) => ParamValue::String(s.value().clone()),
            Some(_) => {
                return Err(self.err(
                    self.value_span(t, "default"),
                    "`default` must be an integer or a string".into(),
                ));
            }
        };
        let spec = ParamSpec {
            name: name.to_string(),
            description,
            kind,
            default: default.clone(),
        };
        spec.check(&default.to_string()).map_err(|reason| {
            self.err(
                self.value_span(t, "default"),
                format!("bad `default`: {reason}"),
            )
        })?;
        Ok(spec)
    }

    fn files(&self, t: &Table, what: &str) -> Result<Vec<FilePattern>, RuleError> {
        let Some(list) = self.str_array(t, "files")? else {
            return Err(self.err(t.span(), format!("{what} needs a `files` key")));
        };
        if list.is_empty() {
            return Err(self.err(
                self.value_span(t, "files"),
                "`files` must not be empty".into(),
            ));
        }
        list.iter()
            .map(|p| FilePattern::new(p).map_err(|m| self.err(self.value_span(t, "files"), m)))
            .collect()
    }

    fn matcher(&self, t: &Table, what: &str) -> Result<Matcher, RuleError> {
        match (self.opt_str(t, "find")?, self.opt_str(t, "find_regex")?) {
            (Some(_), Some(_)) => Err(self.err(
                self.key_span(t, "find_regex"),
                format!("{what} has both `find` and `find_regex`; give one"),
            )),
            (None, None) => Err(self.err(
                t.span(),
                format!("{what} needs `find` (literal text) or `find_regex`"),
            )),
            (Some(lit), None) if lit.is_empty() => Err(self.err(
                self.value_span(t, "find"),
                "`find` must not be empty".into(),
            )),
            (Some(lit), None) => Ok(Matcher::Literal(lit)),
            (None, Some(re)) => Regex::new(&re).map(Matcher::Regex).map_err(|e| {
                self.err(
                    self.value_span(t, "find_regex"),
                    format!("bad `find_regex`: {e}"),
                )
            }),
        }
    }

    fn edit(&self, t: &Table, params: &[String]) -> Result<Edit, RuleError> {
        self.check_keys(t, EDIT_KEYS, "[[edits]]")?;
        let id = self.req_str(t, "id", "[[edits]]")?;
        let what = format!("edit `{id}`");
        let description = self.req_str(t, "description", &what)?;
        let files = self.files(t, &what)?;
        let find = self.matcher(t, &what)?;
        let Some(replace) = self.opt_str(t, "replace")? else {
            return Err(self.err(t.span(), format!("{what} needs a `replace` key")));
        };
        let replace = Template::parse(&replace, params)
            .map_err(|m| self.err(self.value_span(t, "replace"), m))?;
        let applied = match (
            self.opt_str(t, "applied")?,
            self.opt_str(t, "applied_regex")?,
        ) {
            (Some(_), Some(_)) => {
                return Err(self.err(
                    self.key_span(t, "applied_regex"),
                    format!("{what} has both `applied` and `applied_regex`; give one"),
                ));
            }
            (Some(a), None) => Some(Applied::Literal(
                Template::parse(&a, params)
                    .map_err(|m| self.err(self.value_span(t, "applied"), m))?,
            )),
            (None, Some(r)) => Some(Applied::Regex(Regex::new(&r).map_err(|e| {
                self.err(
                    self.value_span(t, "applied_regex"),
                    format!("bad `applied_regex`: {e}"),
                )
            })?)),
            (None, None) => None,
        };
        let expect = match self.opt_str(t, "expect")? {
            Some(e) => e,
            None => match &find {
                Matcher::Literal(l) => format!("`{}`", l.trim()),
                Matcher::Regex(r) => format!("text matching /{}/", r.as_str()),
            },
        };
        let require = match self.opt_str(t, "require")?.as_deref() {
            None | Some("each-file") => Require::EachFile,
            Some("any-file") => Require::AnyFile,
            Some("optional") => Require::Optional,
            Some(other) => {
                return Err(self.err(
                    self.value_span(t, "require"),
                    format!(
                        "unknown `require = \"{other}\"`; allowed: each-file, any-file, optional"
                    ),
                ));
            }
        };
        let count = match self.opt_int(t, "count")? {
            None => None,
            Some(n) if n >= 1 => Some(n as usize),
            Some(_) => {
                return Err(self.err(
                    self.value_span(t, "count"),
                    "`count` must be at least 1".into(),
                ));
            }
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
            one_of: self.opt_str(t, "one_of")?,
            count,
        })
    }
}

fn tables_of(a: &ArrayOfTables) -> Vec<&Table> {
    a.iter().collect()
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

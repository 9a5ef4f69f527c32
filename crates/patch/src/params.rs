//! Rule parameters: declarations with defaults and validation, `KEY=VALUE` overrides,
//! rendering `{param}` templates (`hostkit_core::template`) and the conditions of warnings.

use std::collections::BTreeMap;

use regex::Regex;

use crate::error::PatchError;
use crate::rule::Rule;

/// A parameter's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamValue {
    /// An integer parameter.
    Integer(i64),
    /// A string parameter.
    String(String),
}

impl std::fmt::Display for ParamValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamValue::Integer(i) => write!(f, "{i}"),
            ParamValue::String(s) => write!(f, "{s}"),
        }
    }
}

/// What values a parameter accepts.
#[derive(Debug, Clone)]
pub enum ParamKind {
    /// An integer, optionally within `min..=max`.
    Integer {
        /// The smallest value allowed.
        min: Option<i64>,
        /// The largest value allowed.
        max: Option<i64>,
    },
    /// A string, optionally matching a regular expression.
    String {
        /// The pattern the whole value must match.
        pattern: Option<Regex>,
    },
}

impl ParamKind {
    /// A short description, e.g. `integer 1..=65536`.
    pub fn describe(&self) -> String {
        match self {
            ParamKind::Integer { min, max } => match (min, max) {
                (Some(lo), Some(hi)) => format!("integer {lo}..={hi}"),
                (Some(lo), None) => format!("integer >= {lo}"),
                (None, Some(hi)) => format!("integer <= {hi}"),
                (None, None) => "integer".into(),
            },
            ParamKind::String { pattern: Some(p) } => format!("string matching /{}/", p.as_str()),
            ParamKind::String { pattern: None } => "string".into(),
        }
    }
}

/// A declared parameter.
#[derive(Debug, Clone)]
pub struct ParamSpec {
    /// Its name, as used in `--set NAME=VALUE` and `{NAME}`.
    pub name: String,
    /// What it controls.
    pub description: String,
    /// What values it accepts.
    pub kind: ParamKind,
    /// The value used unless overridden.
    pub default: ParamValue,
}

impl ParamSpec {
    /// Parses and validates a value given as text.
    pub fn check(&self, text: &str) -> Result<ParamValue, String> {
        match &self.kind {
            ParamKind::Integer { min, max } => {
                let v: i64 = text
                    .trim()
                    .parse()
                    .map_err(|_| format!("expected an {}", self.kind.describe()))?;
                if min.is_some_and(|lo| v < lo) || max.is_some_and(|hi| v > hi) {
                    return Err(format!(
                        "out of range: expected an {}",
                        self.kind.describe()
                    ));
                }
                Ok(ParamValue::Integer(v))
            }
            ParamKind::String { pattern } => {
                if let Some(p) = pattern {
                    let whole = p
                        .find(text)
                        .is_some_and(|m| m.start() == 0 && m.end() == text.len());
                    if !whole {
                        return Err(format!("expected a {}", self.kind.describe()));
                    }
                }
                Ok(ParamValue::String(text.to_string()))
            }
        }
    }
}

/// The resolved parameters of one run of a rule: every declared parameter has a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    values: BTreeMap<String, ParamValue>,
}

impl Params {
    /// The value of a parameter.
    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.values.get(name)
    }

    /// All values, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ParamValue)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl Rule {
    /// The defaults of all parameters.
    pub fn default_params(&self) -> Params {
        Params {
            values: self
                .params
                .iter()
                .map(|p| (p.name.clone(), p.default.clone()))
                .collect(),
        }
    }

    /// The defaults overridden by `KEY=VALUE` strings (as given to `--set`).
    pub fn params_with<S: AsRef<str>>(&self, sets: &[S]) -> Result<Params, PatchError> {
        self.params_from_pairs(&hostkit_core::parse_sets(sets)?)
    }

    /// The defaults overridden by `(key, value)` pairs.
    pub fn params_from_pairs(&self, pairs: &[(String, String)]) -> Result<Params, PatchError> {
        let mut params = self.default_params();
        for (key, value) in pairs {
            let Some(spec) = self.params.iter().find(|p| &p.name == key) else {
                return Err(PatchError::UnknownParam {
                    rule: self.name.clone(),
                    key: key.clone(),
                    known: self.params.iter().map(|p| p.name.clone()).collect(),
                });
            };
            let v = spec
                .check(value)
                .map_err(|reason| PatchError::BadParamValue {
                    rule: self.name.clone(),
                    key: key.clone(),
                    value: value.clone(),
                    reason,
                })?;
            params.values.insert(key.clone(), v);
        }
        Ok(params)
    }
}

/// Renders a replacement template with a run's parameters; `escape_dollar` doubles `$` in
/// values (for regex replacement templates, where `$1` refers to a capture group).
pub(crate) fn render(
    template: &hostkit_core::Template,
    params: &Params,
    escape_dollar: bool,
) -> String {
    template.render(|name| {
        params.get(name).map(|v| {
            let v = v.to_string();
            if escape_dollar {
                v.replace('$', "$$")
            } else {
                v
            }
        })
    })
}

/// A comparison operator of a warning's `when`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

/// `when = "PARAM OP INTEGER"`: a condition on an integer parameter.
#[derive(Debug, Clone)]
pub(crate) struct Condition {
    pub(crate) param: String,
    pub(crate) op: CmpOp,
    pub(crate) value: i64,
}

impl Condition {
    pub(crate) fn parse(text: &str, params: &[ParamSpec]) -> Result<Condition, String> {
        let bad = || {
            format!("`when = \"{text}\"`: expected `PARAM OP INTEGER`, OP one of > >= < <= == !=")
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        let [param, op, value] = words.as_slice() else {
            return Err(bad());
        };
        let op = match *op {
            ">" => CmpOp::Gt,
            ">=" => CmpOp::Ge,
            "<" => CmpOp::Lt,
            "<=" => CmpOp::Le,
            "==" => CmpOp::Eq,
            "!=" => CmpOp::Ne,
            _ => return Err(bad()),
        };
        let value: i64 = value.parse().map_err(|_| bad())?;
        match params.iter().find(|p| p.name == *param) {
            Some(ParamSpec {
                kind: ParamKind::Integer { .. },
                ..
            }) => Ok(Condition {
                param: param.to_string(),
                op,
                value,
            }),
            Some(_) => Err(format!("`when`: parameter `{param}` is not an integer")),
            None => Err(format!(
                "`when`: no parameter `{param}` (declare it under [params])"
            )),
        }
    }

    pub(crate) fn holds(&self, params: &Params) -> bool {
        let Some(ParamValue::Integer(v)) = params.get(&self.param) else {
            return false;
        };
        match self.op {
            CmpOp::Gt => *v > self.value,
            CmpOp::Ge => *v >= self.value,
            CmpOp::Lt => *v < self.value,
            CmpOp::Le => *v <= self.value,
            CmpOp::Eq => *v == self.value,
            CmpOp::Ne => *v != self.value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostkit_core::{Braces, Template};

    fn parse(text: &str, names: &[&str]) -> Template {
        Template::parse(text, Braces::Source, |n| names.contains(&n)).expect("template")
    }

    #[test]
    fn templates_fill_params_and_keep_c_braces() {
        let t = parse("#define X {size}\nif (a) {\n  b({{size});\n}", &["size"]);
        let params = Params {
            values: [("size".to_string(), ParamValue::Integer(4096))].into(),
        };
        assert_eq!(
            render(&t, &params, false),
            "#define X 4096\nif (a) {\n  b({size});\n}"
        );
    }

    #[test]
    fn unknown_template_params_are_refused() {
        let rule = "name = \"r\"\nsummary = \"s\"\n[params.size]\ndescription = \"d\"\ntype = \"integer\"\ndefault = 1\n[[edits]]\nid = \"e\"\ndescription = \"d\"\nfiles = [\"a.c\"]\nfind = \"x\"\nreplace = \"x {sise} y\"\n";
        let err = crate::parse_rule("r.toml", rule).unwrap_err().to_string();
        assert!(err.contains("`{sise}` names no parameter"), "{err}");
    }

    #[test]
    fn dollar_is_escaped_for_regex_templates() {
        let t = parse("${1}{v}", &["v"]);
        let params = Params {
            values: [("v".to_string(), ParamValue::String("a$b".into()))].into(),
        };
        assert_eq!(render(&t, &params, true), "${1}a$$b");
    }
}

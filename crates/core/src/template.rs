//! `{name}` templates, one scanner for the two ways hostkit's files use braces:
//!
//! * [`Braces::Strict`] — recipe strings: `{name}` is always a placeholder, `{{` and `}}` are
//!   literal braces, and a lone `}` or an unclosed `{` is an error;
//! * [`Braces::Source`] — replacement text for source files (C, where braces are everywhere):
//!   only `{word}` (letters, digits, `_`) is a placeholder, `{{` is a literal `{`, `${…}` is
//!   left alone (a regex capture reference), and every other brace is text.
//!
//! A template is parsed once (syntax, then every name checked by the caller's `known`) and
//! rendered many times.

/// How braces read (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Braces {
    /// Recipe strings.
    Strict,
    /// Source-file replacement text.
    Source,
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// A `}` that closes nothing ([`Braces::Strict`]).
    LoneClose,
    /// A `{` never closed ([`Braces::Strict`]).
    Unclosed,
    /// A placeholder the caller does not know (the caller words the message: it knows what
    /// the names are).
    Unknown {
        /// The name between the braces.
        name: String,
    },
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateError::LoneClose => f.write_str("a lone `}`: write `}}` for a literal brace"),
            TemplateError::Unclosed => {
                f.write_str("an unclosed `{`: write `{{` for a literal brace")
            }
            TemplateError::Unknown { name } => write!(f, "unknown name `{{{name}}}`"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Name(String),
}

/// A parsed template: the text it was written as, and its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    parts: Vec<Part>,
}

impl Template {
    /// Parses `text`; every placeholder must satisfy `known` (checked in order, after the
    /// syntax of the whole text).
    pub fn parse(
        text: &str,
        braces: Braces,
        known: impl Fn(&str) -> bool,
    ) -> Result<Template, TemplateError> {
        let t = scan(text, braces, true)?;
        if let Some(name) = t.names().find(|n| !known(n)) {
            return Err(TemplateError::Unknown {
                name: name.to_string(),
            });
        }
        Ok(t)
    }

    /// Reads `text` without refusing anything (for text shown to people, such as a step's
    /// summary): a brace that is not part of a placeholder stays as it is.
    pub fn lenient(text: &str, braces: Braces) -> Template {
        scan(text, braces, false).unwrap_or_else(|_| Template {
            text: text.to_string(),
            parts: vec![Part::Text(text.to_string())],
        })
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The placeholder names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Name(n) => Some(n.as_str()),
            Part::Text(_) => None,
        })
    }

    /// The text with each placeholder replaced by `value(name)`; a name without a value is
    /// left as `{name}`.
    pub fn render<V: AsRef<str>>(&self, value: impl Fn(&str) -> Option<V>) -> String {
        let mut out = String::with_capacity(self.text.len());
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Name(n) => match value(n) {
                    Some(v) => out.push_str(v.as_ref()),
                    None => {
                        out.push('{');
                        out.push_str(n);
                        out.push('}');
                    }
                },
            }
        }
        out
    }
}

/// The scanner. `strict_errors`: whether a syntax error of [`Braces::Strict`] is an error (or
/// the brace is text).
fn scan(text: &str, braces: Braces, strict_errors: bool) -> Result<Template, TemplateError> {
    let mut parts = Vec::new();
    let mut buf = String::new();
    let mut rest = text;
    let flush = |buf: &mut String, parts: &mut Vec<Part>| {
        if !buf.is_empty() {
            parts.push(Part::Text(std::mem::take(buf)));
        }
    };
    // Bounded: every turn consumes at least one character of `rest`.
    while let Some(pos) = rest.find(['{', '}']) {
        buf.push_str(&rest[..pos]);
        let c = rest.as_bytes()[pos] as char;
        let after = &rest[pos + 1..];
        match (braces, c) {
            (Braces::Strict, _) if after.starts_with(c) => {
                buf.push(c);
                rest = &after[1..];
            }
            (Braces::Strict, '}') => {
                if strict_errors {
                    return Err(TemplateError::LoneClose);
                }
                buf.push('}');
                rest = after;
            }
            (Braces::Strict, _) => match after.find('}') {
                Some(end) => {
                    flush(&mut buf, &mut parts);
                    parts.push(Part::Name(after[..end].to_string()));
                    rest = &after[end + 1..];
                }
                None if strict_errors => return Err(TemplateError::Unclosed),
                None => {
                    buf.push('{');
                    rest = after;
                }
            },
            (Braces::Source, '}') => {
                buf.push('}');
                rest = after;
            }
            (Braces::Source, _) if buf.ends_with('$') => {
                buf.push('{');
                rest = after;
            }
            (Braces::Source, _) if after.starts_with('{') => {
                buf.push('{');
                rest = &after[1..];
            }
            (Braces::Source, _) => {
                let len = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                if len > 0 && after[len..].starts_with('}') {
                    flush(&mut buf, &mut parts);
                    parts.push(Part::Name(after[..len].to_string()));
                    rest = &after[len + 1..];
                } else {
                    buf.push('{');
                    rest = after;
                }
            }
        }
    }
    buf.push_str(rest);
    flush(&mut buf, &mut parts);
    Ok(Template {
        text: text.to_string(),
        parts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<&'static str> {
        match name {
            "home" => Some("/home/u"),
            "size" => Some("64"),
            "v" => Some("a$b"),
            _ => None,
        }
    }

    #[test]
    fn strict_templates_render_and_escape() {
        let t = Template::parse("{home}/.profile ${{X}}", Braces::Strict, |_| true).unwrap();
        assert_eq!(t.names().collect::<Vec<_>>(), ["home"]);
        assert_eq!(t.render(vars), "/home/u/.profile ${X}");
        assert_eq!(t.as_str(), "{home}/.profile ${{X}}");
        assert_eq!(
            Template::parse("{oops", Braces::Strict, |_| true),
            Err(TemplateError::Unclosed)
        );
        assert_eq!(
            Template::parse("a } b", Braces::Strict, |_| true),
            Err(TemplateError::LoneClose)
        );
        assert_eq!(
            Template::parse("{a} {b}", Braces::Strict, |n| n == "a"),
            Err(TemplateError::Unknown { name: "b".into() })
        );
        // Syntax is checked before names.
        assert_eq!(
            Template::parse("{b} }", Braces::Strict, |_| false),
            Err(TemplateError::LoneClose)
        );
    }

    #[test]
    fn lenient_templates_keep_stray_braces_and_unknown_names() {
        let t = Template::lenient("{home} {x} {oops", Braces::Strict);
        assert_eq!(t.render(vars), "/home/u {x} {oops");
        assert_eq!(
            Template::lenient("a } b", Braces::Strict).render(vars),
            "a } b"
        );
    }

    #[test]
    fn source_templates_keep_c_braces_and_capture_references() {
        let t = Template::parse(
            "#define X {size}\nif (a) {\n  b({{size});\n}",
            Braces::Source,
            |n| n == "size",
        )
        .unwrap();
        assert_eq!(t.render(vars), "#define X 64\nif (a) {\n  b({size});\n}");
        assert_eq!(
            Template::parse("x {sise} y", Braces::Source, |n| n == "size"),
            Err(TemplateError::Unknown {
                name: "sise".into()
            })
        );
        let t = Template::parse("${1}{v}", Braces::Source, |n| n == "v").unwrap();
        assert_eq!(t.render(vars), "${1}a$b");
    }
}

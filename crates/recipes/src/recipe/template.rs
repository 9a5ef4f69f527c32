//! The `{name}` template language of recipe strings (`{{` and `}}` for literal braces).

use std::collections::BTreeMap;

/// A string with `{name}` placeholders (`{{` and `}}` for literal braces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(pub String);

impl Template {
    /// The placeholder names, or an error message for an unclosed `{`.
    pub fn placeholders(&self) -> std::result::Result<Vec<&str>, String> {
        let s = self.0.as_str();
        let mut names = Vec::new();
        let mut rest = s;
        while let Some(pos) = rest.find(['{', '}']) {
            let after = &rest[pos + 1..];
            let c = rest.as_bytes()[pos];
            if after.as_bytes().first() == Some(&c) {
                rest = &after[1..];
                continue;
            }
            if c == b'}' {
                return Err("a lone `}`: write `}}` for a literal brace".into());
            }
            let end = after
                .find('}')
                .ok_or_else(|| "an unclosed `{`: write `{{` for a literal brace".to_string())?;
            names.push(&after[..end]);
            rest = &after[end + 1..];
        }
        Ok(names)
    }

    /// The text with placeholders replaced (unknown names are left as they are).
    pub fn render(&self, vars: &BTreeMap<String, String>) -> String {
        let mut out = String::with_capacity(self.0.len());
        let mut rest = self.0.as_str();
        while let Some(pos) = rest.find(['{', '}']) {
            out.push_str(&rest[..pos]);
            let c = rest.as_bytes()[pos] as char;
            let after = &rest[pos + 1..];
            if after.starts_with(c) {
                out.push(c);
                rest = &after[1..];
                continue;
            }
            match (c, after.find('}')) {
                ('{', Some(end)) => {
                    let name = &after[..end];
                    match vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => out.push_str(&rest[pos..pos + end + 2]),
                    }
                    rest = &after[end + 1..];
                }
                _ => {
                    out.push(c);
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_and_escape() {
        let vars: BTreeMap<String, String> = [("home".to_string(), "/home/u".to_string())].into();
        let t = Template("{home}/.profile ${{X}}".into());
        assert_eq!(t.placeholders().unwrap(), vec!["home"]);
        assert_eq!(t.render(&vars), "/home/u/.profile ${X}");
        assert!(Template("{oops".into()).placeholders().is_err());
    }
}

//! `kind = "ini"`: `key=value` in a `[section]` of an INI-style file (GTK's `settings.ini`,
//! Qt's `Trolltech.conf`). Other sections, keys, comments and order are kept; an existing key
//! is rewritten in place, a missing one is added at the end of its section, a missing section
//! at the end of the file.

use crate::context::Context;
use crate::error::Result;
use crate::recipe::{StepContext, Template};
use crate::steps::{Outcome, edit_file, parse_mode};
use crate::text::Lines;
use crate::wording::Fields;

/// The keys of an `ini` step.
pub const KEYS: &[&str] = &["path", "section", "key", "value", "mode"];

/// An `ini` step.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The file.
    pub path: Template,
    /// The section, without brackets.
    pub section: String,
    /// The key.
    pub key: String,
    /// The value.
    pub value: Template,
    /// Mode of a new file.
    pub mode: u32,
}

pub(crate) fn parse(f: &Fields<'_>, ctx: &StepContext<'_>) -> Result<Spec> {
    Ok(Spec {
        path: ctx.template(f, "path", f.required("path")?)?,
        section: f.required("section")?,
        key: f.required("key")?,
        value: ctx.template(f, "value", f.required("value")?)?,
        mode: parse_mode(f)?,
    })
}

/// The section name of a `[section]` line.
fn section_of(content: &str) -> Option<&str> {
    let t = content.trim();
    t.strip_prefix('[')?.strip_suffix(']').map(str::trim)
}

/// Sets `key=value` in `section` of `text`.
pub(crate) fn set(text: &str, section: &str, key: &str, value: &str) -> String {
    let mut lines = Lines::new(text);
    let mut in_section = false;
    let mut section_end = None; // index after the last non-blank line of the section
    for i in lines.indexes() {
        let content = lines.content(i);
        if let Some(name) = section_of(content) {
            if in_section {
                break;
            }
            in_section = name == section;
            if in_section {
                section_end = Some(i + 1);
            }
            continue;
        }
        if !in_section {
            continue;
        }
        let trimmed = content.trim_start();
        if !trimmed.is_empty() && !trimmed.starts_with(['#', ';']) {
            section_end = Some(i + 1);
        }
        if let Some((k, v)) = content.split_once('=')
            && k.trim() == key
            && !trimmed.starts_with(['#', ';'])
        {
            if v.trim() == value {
                return text.to_string();
            }
            let lead = &v[..v.len() - v.trim_start().len()];
            lines.replace(i, &format!("{k}={lead}{value}"));
            return lines.text();
        }
    }
    match section_end {
        Some(end) => lines.insert(end, &format!("{key}={value}")),
        None => {
            if lines.len() > 0 && !lines.content(lines.len() - 1).trim().is_empty() {
                lines.push("");
            }
            lines.push(&format!("[{section}]"));
            lines.push(&format!("{key}={value}"));
        }
    }
    lines.text()
}

impl Spec {
    pub(crate) fn describe(&self, ctx: &Context) -> String {
        format!(
            "[{}] {}={} in {}",
            self.section,
            self.key,
            ctx.render(&self.value),
            ctx.render(&self.path)
        )
    }

    pub(crate) fn plan(&self, ctx: &Context) -> Result<Outcome> {
        let logical = ctx.path(&self.path)?;
        let value = ctx.render(&self.value);
        let effects = edit_file(ctx, &logical, self.mode, |before| {
            Some(set(before.unwrap_or(""), &self.section, &self.key, &value))
        })?;
        Ok(Outcome::Effects(effects))
    }
}

#[cfg(test)]
mod tests {
    use super::set;

    #[test]
    fn edits_in_place_and_keeps_the_rest() {
        let text = "; comment\r\n[Qt]\r\nstyle = Plastique\r\nfont=x\r\n\r\n[Other]\r\na=1\r\n";
        assert_eq!(
            set(text, "Qt", "style", "GTK+"),
            "; comment\r\n[Qt]\r\nstyle = GTK+\r\nfont=x\r\n\r\n[Other]\r\na=1\r\n"
        );
        assert_eq!(
            set(text, "Qt", "new", "1"),
            "; comment\r\n[Qt]\r\nstyle = Plastique\r\nfont=x\r\nnew=1\r\n\r\n[Other]\r\na=1\r\n"
        );
        assert_eq!(
            set("[A]\nb=2", "Settings", "k", "v"),
            "[A]\nb=2\n\n[Settings]\nk=v\n"
        );
        assert_eq!(set("", "Settings", "k", "v"), "[Settings]\nk=v\n");
        assert_eq!(
            set("[Settings]\nk=v\n", "Settings", "k", "v"),
            "[Settings]\nk=v\n"
        );
    }
}

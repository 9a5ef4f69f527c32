//! `kind = "line"`: a line present (or absent) in a text file, such as a shell profile.
//!
//! `path` may list several files: the first that exists is edited, else the last is created
//! (bash reads the first of `~/.bash_profile`, `~/.bash_login`, `~/.profile`; creating
//! `~/.bash_profile` would hide an existing `~/.profile`). With `match`, a line starting with
//! that prefix is replaced instead of adding a second one (the last such line, like Ansible's
//! `lineinfile`).

use std::path::PathBuf;

use crate::context::Context;
use crate::error::Result;
use crate::recipe::{StepContext, Template};
use crate::steps::{Outcome, edit_file, parse_mode};
use crate::text::Lines;
use crate::wording::Fields;

/// The keys of a `line` step.
pub const KEYS: &[&str] = &["path", "line", "match", "state", "mode"];

/// A `line` step.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Candidate files: the first existing one, else the last.
    pub paths: Vec<Template>,
    /// The line.
    pub line: Template,
    /// A prefix identifying the line to replace (e.g. `export GTK_OVERLAY_SCROLLING=`).
    pub match_prefix: Option<Template>,
    /// True: present; false: absent.
    pub present: bool,
    /// Mode of a new file.
    pub mode: u32,
}

pub(crate) fn parse(f: &Fields<'_>, ctx: &StepContext<'_>) -> Result<Spec> {
    let mut paths = Vec::new();
    for p in f
        .strings("path")?
        .ok_or_else(|| f.error("path", "missing required key"))?
    {
        paths.push(ctx.template(f, "path", p)?);
    }
    let line = ctx.template(f, "line", f.required("line")?)?;
    if line.as_str().contains('\n') {
        return Err(f.error("line", "must be a single line"));
    }
    let match_prefix = match f.string("match")? {
        Some(m) => Some(ctx.template(f, "match", m)?),
        None => None,
    };
    let present = f
        .choice("state", &["present", "absent"])?
        .is_none_or(|s| s == "present");
    Ok(Spec {
        paths,
        line,
        match_prefix,
        present,
        mode: parse_mode(f)?,
    })
}

/// The text with `line` present (replacing the last line starting with `prefix`, else
/// appended) or absent (every such line removed). `None` in and out: no file.
pub(crate) fn edit(
    before: Option<&str>,
    line: &str,
    prefix: Option<&str>,
    present: bool,
) -> Option<String> {
    let Some(before) = before else {
        return present.then(|| format!("{line}\n"));
    };
    let mut lines = Lines::new(before);
    let matches = |content: &str| content == line || prefix.is_some_and(|p| content.starts_with(p));
    let found: Vec<usize> = lines
        .indexes()
        .filter(|&i| matches(lines.content(i)))
        .collect();
    if present {
        if found.iter().any(|&i| lines.content(i) == line) {
            return Some(before.to_string());
        }
        match found.last() {
            Some(&i) => lines.replace(i, line),
            None => lines.push(line),
        }
    } else {
        for &i in found.iter().rev() {
            lines.remove(i);
        }
    }
    Some(lines.text())
}

impl Spec {
    /// The file to edit: the first candidate that exists, else the last.
    fn target(&self, ctx: &Context) -> Result<PathBuf> {
        let mut last = None;
        for t in &self.paths {
            let logical = ctx.path(t)?;
            if std::fs::symlink_metadata(ctx.resolve(&logical)?).is_ok() {
                return Ok(logical);
            }
            last = Some(logical);
        }
        last.ok_or_else(|| crate::error::Error::Environment("line step without a path".into()))
    }

    pub(crate) fn describe(&self, ctx: &Context) -> String {
        let mut paths = self.paths.iter().map(|p| ctx.render(p));
        let first = paths.next().unwrap_or_default();
        let rest: Vec<String> = paths.collect();
        format!(
            "{} `{}` in {first}{}",
            if self.present { "line" } else { "no line" },
            ctx.render(&self.line),
            if rest.is_empty() {
                String::new()
            } else {
                format!(" (or {})", rest.join(", "))
            }
        )
    }

    pub(crate) fn plan(&self, ctx: &Context) -> Result<Outcome> {
        let logical = self.target(ctx)?;
        let line = ctx.render(&self.line);
        let prefix = self.match_prefix.as_ref().map(|m| ctx.render(m));
        let effects = edit_file(ctx, &logical, self.mode, |before| {
            edit(before, &line, prefix.as_deref(), self.present)
        })?;
        Ok(Outcome::Effects(effects))
    }
}

#[cfg(test)]
mod tests {
    use super::edit;

    const LINE: &str = "export GTK_OVERLAY_SCROLLING=0";
    const PREFIX: Option<&str> = Some("export GTK_OVERLAY_SCROLLING=");

    #[test]
    fn present_appends_replaces_or_keeps() {
        assert_eq!(
            edit(None, LINE, PREFIX, true).as_deref(),
            Some("export GTK_OVERLAY_SCROLLING=0\n")
        );
        assert_eq!(edit(None, LINE, PREFIX, false), None);
        assert_eq!(
            edit(
                Some("a\r\nexport GTK_OVERLAY_SCROLLING=1\r\nb"),
                LINE,
                PREFIX,
                true
            )
            .as_deref(),
            Some("a\r\nexport GTK_OVERLAY_SCROLLING=0\r\nb")
        );
        assert_eq!(
            edit(
                Some("# x\nexport GTK_OVERLAY_SCROLLING=0\n"),
                LINE,
                PREFIX,
                true
            )
            .as_deref(),
            Some("# x\nexport GTK_OVERLAY_SCROLLING=0\n")
        );
        assert_eq!(
            edit(Some("# x"), LINE, None, true).as_deref(),
            Some("# x\nexport GTK_OVERLAY_SCROLLING=0\n")
        );
    }

    #[test]
    fn absent_removes_every_match() {
        assert_eq!(
            edit(
                Some("a\nexport GTK_OVERLAY_SCROLLING=1\nb\nexport GTK_OVERLAY_SCROLLING=0\n"),
                LINE,
                PREFIX,
                false
            )
            .as_deref(),
            Some("a\nb\n")
        );
    }
}

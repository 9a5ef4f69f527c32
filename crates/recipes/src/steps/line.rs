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
use crate::toml::Fields;

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
    if line.0.contains('\n') {
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
        let paths: Vec<String> = self.paths.iter().map(|p| ctx.render(p)).collect();
        format!(
            "{} `{}` in {}",
            if self.present { "line" } else { "no line" },
            ctx.render(&self.line),
            paths.join(" (or ") + &")".repeat(paths.len().saturating_sub(1))
        )
    }

    pub(crate) fn plan(&self, ctx: &Context) -> Result<Outcome> {
        let logical = self.target(ctx)?;
        let line = ctx.render(&self.line);
        let prefix = self.match_prefix.as_ref().map(|m| ctx.render(m));
        let present = self.present;
        let effects = edit_file(ctx, &logical, self.mode, |before| {
            let Some(before) = before else {
                return if present {
                    Some(format!("{line}\n"))
                } else {
                    None
                };
            };
            let mut lines = Lines::new(before);
            let matches = |content: &str| {
                content == line || prefix.as_deref().is_some_and(|p| content.starts_with(p))
            };
            let found: Vec<usize> = lines
                .indexes()
                .filter(|&i| matches(lines.content(i)))
                .collect();
            if present {
                if found.iter().any(|&i| lines.content(i) == line) {
                    return Some(before.to_string());
                }
                match found.last() {
                    Some(&i) => lines.replace(i, &line),
                    None => lines.push(&line),
                }
            } else {
                for &i in found.iter().rev() {
                    lines.remove(i);
                }
            }
            Some(lines.text())
        })?;
        Ok(Outcome::Effects(effects))
    }
}

//! `kind = "file"`: a whole file managed by hostkit, such as a drop-in in `/etc/profile.d/`.
//! With `reload = ["udevadm", "control", "--reload"]`, that command runs after the file is
//! written (and again after `revert` restores it) on the live system; under `--root` it is
//! reported, not run.

use crate::context::Context;
use crate::error::Result;
use crate::host::Cmd;
use crate::plan::{Effect, Reload};
use crate::recipe::{StepContext, Template};
use crate::steps::{Outcome, edit_file, parse_mode};
use crate::wording::Fields;

/// The keys of a `file` step.
pub const KEYS: &[&str] = &["path", "content", "mode", "reload"];

/// A `file` step.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The file.
    pub path: Template,
    /// Its whole content.
    pub content: Template,
    /// Its mode when created.
    pub mode: u32,
    /// A command that makes a service re-read the file, run after it changes.
    pub reload: Option<Vec<String>>,
}

pub(crate) fn parse(f: &Fields<'_>, ctx: &StepContext<'_>) -> Result<Spec> {
    Ok(Spec {
        path: ctx.template(f, "path", f.required("path")?)?,
        content: ctx.template(f, "content", f.required("content")?)?,
        mode: parse_mode(f)?,
        reload: match f.strings("reload")? {
            Some(argv) if argv.is_empty() => {
                return Err(f.error(
                    "reload",
                    "an empty command; give the program and its arguments",
                ));
            }
            other => other,
        },
    })
}

impl Spec {
    pub(crate) fn describe(&self, ctx: &Context) -> String {
        format!("file {} (managed whole)", ctx.render(&self.path))
    }

    pub(crate) fn plan(&self, ctx: &Context) -> Result<Outcome> {
        let logical = ctx.path(&self.path)?;
        let content = ctx.render(&self.content);
        let mut effects = edit_file(ctx, &logical, self.mode, |_| Some(content))?;
        if let Some(argv) = &self.reload
            && !effects.is_empty()
        {
            effects.push(Effect::Reload(Reload {
                cmd: Cmd::new(argv.iter().cloned()),
                run: ctx.live,
            }));
        }
        Ok(Outcome::Effects(effects))
    }
}

//! `kind = "file"`: a whole file managed by hostkit, such as a drop-in in `/etc/profile.d/`.

use crate::context::Context;
use crate::error::Result;
use crate::recipe::{StepContext, Template};
use crate::steps::{Outcome, edit_file, parse_mode};
use crate::toml::Fields;

/// The keys of a `file` step.
pub const KEYS: &[&str] = &["path", "content", "mode"];

/// A `file` step.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The file.
    pub path: Template,
    /// Its whole content.
    pub content: Template,
    /// Its mode when created.
    pub mode: u32,
}

pub(crate) fn parse(f: &Fields<'_>, ctx: &StepContext<'_>) -> Result<Spec> {
    Ok(Spec {
        path: ctx.template(f, "path", f.required("path")?)?,
        content: ctx.template(f, "content", f.required("content")?)?,
        mode: parse_mode(f)?,
    })
}

impl Spec {
    pub(crate) fn describe(&self, ctx: &Context) -> String {
        format!("file {} (managed whole)", ctx.render(&self.path))
    }

    pub(crate) fn plan(&self, ctx: &Context) -> Result<Outcome> {
        let logical = ctx.path(&self.path)?;
        let content = ctx.render(&self.content);
        Ok(Outcome::Effects(edit_file(
            ctx,
            &logical,
            self.mode,
            |_| Some(content),
        )?))
    }
}

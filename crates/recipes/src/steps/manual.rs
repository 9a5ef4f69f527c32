//! `kind = "manual"`: something no setting can do. `check` reports it as `manual` with what a
//! person must do; `apply` changes nothing for it.

use crate::context::Context;
use crate::error::Result;
use crate::recipe::{StepContext, Template};
use crate::steps::Outcome;
use crate::wording::Fields;

/// The keys of a `manual` step.
pub const KEYS: &[&str] = &["action", "see"];

/// A `manual` step.
#[derive(Debug, Clone)]
pub struct Spec {
    /// What a person must do.
    pub action: Template,
    /// Where to read more.
    pub see: Vec<String>,
}

pub(crate) fn parse(f: &Fields<'_>, ctx: &StepContext<'_>) -> Result<Spec> {
    Ok(Spec {
        action: ctx.template(f, "action", f.required("action")?)?,
        see: f.strings("see")?.unwrap_or_default(),
    })
}

impl Spec {
    pub(crate) fn describe(&self) -> String {
        "no setting exists: manual".to_string()
    }

    pub(crate) fn plan(&self, ctx: &Context) -> Outcome {
        let mut text = ctx.render(&self.action);
        if !self.see.is_empty() {
            text.push_str(&format!(" (see {})", self.see.join(", ")));
        }
        Outcome::Manual(text)
    }
}

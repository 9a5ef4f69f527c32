//! `kind = "package"`: packages that should be installed, by logical name (see `[packages]`).
//! Checked with `dpkg-query --admindir`, `rpm --root -q` or `pacman --root -Q`; installed with
//! the distribution's package manager on the live system. Under `--root` the install command
//! is reported, not run; in user scope a missing package is `manual` (it needs root).

use crate::context::Context;
use crate::error::Result;
use crate::host::Host;
use crate::pkg::{Manager, Presence, presence};
use crate::plan::{Effect, Install};
use crate::recipe::{Recipe, Scope, StepContext};
use crate::steps::Outcome;
use crate::wording::Fields;

/// The keys of a `package` step.
pub const KEYS: &[&str] = &["packages"];

/// A `package` step.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Logical package names.
    pub packages: Vec<String>,
}

pub(crate) fn parse(f: &Fields<'_>, ctx: &StepContext<'_>) -> Result<Spec> {
    let packages = f
        .strings("packages")?
        .ok_or_else(|| f.error("packages", "missing required key"))?;
    for p in &packages {
        ctx.package(f, "packages", p)?;
    }
    Ok(Spec { packages })
}

impl Spec {
    pub(crate) fn describe(&self) -> String {
        format!("installed: {}", self.packages.join(", "))
    }

    pub(crate) fn plan(&self, recipe: &Recipe, ctx: &Context, host: &dyn Host) -> Result<Outcome> {
        let mut missing = Vec::new();
        for logical in &self.packages {
            let names = recipe.packages.get(logical).cloned().unwrap_or_default();
            match presence(host, &ctx.root, logical, &names) {
                Presence::Installed(_) => {}
                Presence::Missing(names) => missing.extend(names.into_iter().take(1)),
                Presence::Unknown(reason) => return Ok(Outcome::NotApplicable(reason)),
            }
        }
        let Some(manager) = Manager::detect(&ctx.root) else {
            return Ok(Outcome::Effects(Vec::new()));
        };
        if missing.is_empty() {
            return Ok(Outcome::Effects(Vec::new()));
        }
        let cmd = manager.install_cmd(&missing);
        if ctx.scope == Scope::User {
            return Ok(Outcome::Manual(format!(
                "not installed: {}; as root run `{}` (or use --scope system)",
                missing.join(", "),
                cmd.display()
            )));
        }
        Ok(Outcome::Effects(vec![Effect::Install(Install {
            manager,
            packages: missing,
            cmd,
            run: ctx.live,
        })]))
    }
}

//! `kind = "gsettings"`: a GSettings key.
//!
//! * User scope: through the real `gsettings` (`get` to check, `set` to apply). The previous
//!   value is recorded so `revert` can restore it (`gsettings reset` when it was the default).
//!   Under `--root` there is no live session to ask, so the step is `not applicable`.
//! * System scope: a dconf keyfile `/etc/dconf/db/local.d/50-hostkit-RECIPE-STEP`, the profile
//!   `/etc/dconf/profile/user` (`user-db:user` first, `system-db:local`), then the binary
//!   database `/etc/dconf/db/local` is rebuilt: `dconf update` on the live system;
//!   `dconf compile ROOT/etc/dconf/db/local ROOT/etc/dconf/db/local.d` under `--root` (offline:
//!   it only writes that file, which is backed up and restored like the others).

use std::path::Path;

use crate::context::Context;
use crate::error::Result;
use crate::host::{Cmd, Host, not_started};
use crate::plan::{Effect, GsettingsChange, Regenerate};
use crate::recipe::{Scope, StepContext, Template};
use crate::steps::{Outcome, edit_file};
use crate::text::Lines;
use crate::wording::Fields;

/// The keys of a `gsettings` step.
pub const KEYS: &[&str] = &["schema", "key", "value", "dconf_path"];

/// The dconf profile every user gets.
const PROFILE: &str = "/etc/dconf/profile/user";
/// The system database's keyfile directory and binary database.
const DB_DIR: &str = "/etc/dconf/db/local.d";
const DB: &str = "/etc/dconf/db/local";

/// A `gsettings` step.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The schema id, e.g. `org.gtk.Settings.FileChooser`.
    pub schema: String,
    /// The key.
    pub key: String,
    /// The value in GVariant text form (`true`, `'recent'`).
    pub value: Template,
    /// The schema's dconf path, e.g. `/org/gtk/settings/file-chooser/`.
    pub dconf_path: String,
}

pub(crate) fn parse(f: &Fields<'_>, ctx: &StepContext<'_>) -> Result<Spec> {
    let dconf_path = f.required("dconf_path")?;
    if !dconf_path.starts_with('/') || !dconf_path.ends_with('/') || dconf_path.len() < 3 {
        return Err(f.error(
            "dconf_path",
            "must start and end with `/`, e.g. \"/org/gtk/settings/file-chooser/\"",
        ));
    }
    Ok(Spec {
        schema: f.required("schema")?,
        key: f.required("key")?,
        value: ctx.template(f, "value", f.required("value")?)?,
        dconf_path,
    })
}

/// `user-db:user` first and `system-db:local` somewhere, keeping what is there.
fn profile(before: Option<&str>) -> String {
    let mut lines = Lines::new(before.unwrap_or(""));
    let has = |lines: &Lines, want: &str| lines.indexes().any(|i| lines.content(i).trim() == want);
    if !has(&lines, "user-db:user") {
        lines.insert(0, "user-db:user");
    }
    if !has(&lines, "system-db:local") {
        lines.push("system-db:local");
    }
    lines.text()
}

fn mtime(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Spec {
    pub(crate) fn describe(&self, ctx: &Context) -> String {
        format!(
            "gsettings {} {} {}",
            self.schema,
            self.key,
            ctx.render(&self.value)
        )
    }

    pub(crate) fn plan(&self, id: &str, ctx: &Context, host: &dyn Host) -> Result<Outcome> {
        match ctx.scope {
            Scope::User => self.plan_user(ctx, host),
            Scope::System => self.plan_system(id, ctx),
        }
    }

    fn plan_user(&self, ctx: &Context, host: &dyn Host) -> Result<Outcome> {
        if !ctx.live {
            return Ok(Outcome::NotApplicable(
                "a live gsettings probe is not run under --root; use --scope system to set a dconf default in the image".into(),
            ));
        }
        let value = ctx.render(&self.value);
        let get = Cmd::new(["gsettings", "get", &self.schema, &self.key]);
        let out = match host.run(&get) {
            Ok(out) => out,
            Err(e) if not_started(&e) => {
                return Ok(Outcome::NotApplicable(format!(
                    "gsettings is not installed ({e})"
                )));
            }
            Err(e) => return Err(e),
        };
        if !out.success() {
            return Ok(Outcome::NotApplicable(format!(
                "{} {} is not available here: {}",
                self.schema,
                self.key,
                out.stderr.trim()
            )));
        }
        let current = out.stdout.trim().to_string();
        if current == value {
            return Ok(Outcome::Effects(Vec::new()));
        }
        // The schema's default (with vendor overrides), read through the memory backend.
        let default = host
            .run(&get.clone().env("GSETTINGS_BACKEND", "memory"))
            .ok()
            .filter(|o| o.success())
            .map(|o| o.stdout.trim().to_string());
        Ok(Outcome::Effects(vec![Effect::Gsettings(GsettingsChange {
            schema: self.schema.clone(),
            key: self.key.clone(),
            previous_is_default: default.as_deref() == Some(current.as_str()),
            previous: current,
            cmd: Cmd::new(["gsettings", "set", &self.schema, &self.key, &value]),
            value,
        })]))
    }

    fn plan_system(&self, id: &str, ctx: &Context) -> Result<Outcome> {
        let value = ctx.render(&self.value);
        let keyfile = Path::new(DB_DIR).join(format!("50-hostkit-{}-{id}", ctx.recipe));
        let group = self.dconf_path.trim_matches('/');
        let content = format!(
            "# Managed by hostkit (recipe {r}); `hostkit revert {r}` removes it.\n[{group}]\n{}={value}\n",
            self.key,
            r = ctx.recipe
        );
        let mut effects = edit_file(ctx, &keyfile, 0o644, |_| Some(content))?;
        effects.extend(edit_file(ctx, Path::new(PROFILE), 0o644, |before| {
            Some(profile(before))
        })?);
        let db = ctx.resolve(Path::new(DB))?;
        let keyfile_host = ctx.resolve(&keyfile)?;
        let stale = match (mtime(&db), mtime(&keyfile_host)) {
            (Some(db), Some(kf)) => db < kf,
            _ => true,
        };
        if !effects.is_empty() || stale {
            effects.push(Effect::Regenerate(regenerate(ctx)?));
        }
        Ok(Outcome::Effects(effects))
    }
}

/// The command that rebuilds the system database, and the file it writes: `dconf update` on
/// the live system, `dconf compile ROOT/etc/dconf/db/local ROOT/etc/dconf/db/local.d` under
/// `--root`. Apply and revert both take it from here, never from a journal.
pub(crate) fn regenerate(ctx: &Context) -> Result<Regenerate> {
    let db = ctx.resolve(Path::new(DB))?;
    let cmd = if ctx.live {
        Cmd::new(["dconf", "update"])
    } else {
        let dir = ctx.resolve(Path::new(DB_DIR))?;
        Cmd::new([
            "dconf".to_string(),
            "compile".into(),
            db.display().to_string(),
            dir.display().to_string(),
        ])
    };
    Ok(Regenerate {
        display: ctx.display(&db),
        output: db,
        cmd,
    })
}

#[cfg(test)]
mod tests {
    use super::profile;

    #[test]
    fn profile_gets_user_db_first() {
        assert_eq!(profile(None), "user-db:user\nsystem-db:local\n");
        assert_eq!(
            profile(Some("system-db:site\n")),
            "user-db:user\nsystem-db:site\nsystem-db:local\n"
        );
        assert_eq!(
            profile(Some("user-db:user\nsystem-db:local\n")),
            "user-db:user\nsystem-db:local\n"
        );
    }
}

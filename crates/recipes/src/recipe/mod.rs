//! Recipes: the model ([`Recipe`], [`Step`], [`Scope`], …), loading it from TOML
//! ([`parse`]), the `{…}` template language ([`Template`]) and the catalog of built-in and
//! directory recipes ([`Catalog`]).

mod catalog;
mod parse;

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::steps::StepSpec;

pub use catalog::Catalog;
pub use hostkit_core::Template;
pub(crate) use parse::StepContext;
pub use parse::parse;

/// The recipes shipped inside the binary: `(file name, text)`.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "gtk-legacy.toml",
        include_str!("../../../../recipes/gtk-legacy.toml"),
    ),
    (
        "ngroups.toml",
        include_str!("../../../../recipes/ngroups.toml"),
    ),
    (
        "procps.toml",
        include_str!("../../../../recipes/procps.toml"),
    ),
    (
        "qt-gtk.toml",
        include_str!("../../../../recipes/qt-gtk.toml"),
    ),
    (
        "rtl8139.toml",
        include_str!("../../../../recipes/rtl8139.toml"),
    ),
    (
        "udisks2-media.toml",
        include_str!("../../../../recipes/udisks2-media.toml"),
    ),
];

/// Whose configuration a recipe changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The invoking user's home (`$HOME`, `$XDG_CONFIG_HOME`).
    User,
    /// The whole system (`/etc`, packages).
    System,
}

impl Scope {
    /// The scope's name as written in recipes and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::User => "user",
            Scope::System => "system",
        }
    }

    fn parse(s: &str) -> Option<Scope> {
        match s {
            "user" => Some(Scope::User),
            "system" => Some(Scope::System),
            _ => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A recipe parameter, set with `--set NAME=VALUE`.
#[derive(Debug, Clone)]
pub struct Param {
    /// Its name.
    pub name: String,
    /// The value when not set.
    pub default: String,
    /// The allowed values (empty: any).
    pub allowed: Vec<String>,
    /// One line of help.
    pub help: String,
}

/// A logical package's names per package manager.
#[derive(Debug, Clone, Default)]
pub struct PackageNames {
    /// Debian/Ubuntu (dpkg, apt-get).
    pub dpkg: Vec<String>,
    /// Fedora/RHEL/SUSE (rpm, dnf).
    pub rpm: Vec<String>,
    /// Arch (pacman).
    pub pacman: Vec<String>,
}

/// When a step applies at all.
#[derive(Debug, Clone, Default)]
pub struct When {
    /// A logical package (from `[packages]`) that must be installed.
    pub package: Option<String>,
    /// The package's minimum upstream version (e.g. `3.24.9`).
    pub min_version: Option<String>,
    /// The step applies only below this upstream version (e.g. `3.24`).
    pub below_version: Option<String>,
    /// A parameter that overrides the test: `always`, `never` or `auto`.
    pub override_param: Option<String>,
    /// The step applies only when this file exists under the root (e.g. `/etc/modules.conf`
    /// on a legacy modutils system).
    pub exists: Option<Template>,
    /// The step applies only when parameter `.0` has the value `.1` (`param`, `equals`).
    pub param_equals: Option<(String, String)>,
    /// A guard probe (see [`crate::probes`]): the step applies only when it raises no
    /// objection (e.g. no genuine 8139C+ card is present).
    pub guard: Option<String>,
}

/// One step of a recipe.
#[derive(Debug, Clone)]
pub struct Step {
    /// Its id, unique within the recipe for a scope.
    pub id: String,
    /// What it does, one line.
    pub summary: String,
    /// Why, one or two lines of history.
    pub why: String,
    /// Who reads what it writes (which sessions or programs), shown by `show`.
    pub reaches: String,
    /// The scopes it belongs to.
    pub scopes: Vec<Scope>,
    /// When it applies.
    pub when: When,
    /// What it does, per kind.
    pub spec: StepSpec,
    /// `file:line` of its definition.
    pub location: String,
}

/// A recipe: what a host should look like.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// Its name (the file's stem).
    pub name: String,
    /// One line for `hostkit list`.
    pub summary: String,
    /// Longer text for `hostkit show`.
    pub description: String,
    /// Where it was loaded from.
    pub source: String,
    /// The scopes it supports.
    pub scopes: Vec<Scope>,
    /// The scope used without `--scope`.
    pub default_scope: Scope,
    /// Its parameters.
    pub params: Vec<Param>,
    /// Logical package names.
    pub packages: BTreeMap<String, PackageNames>,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

impl Recipe {
    /// The steps of one scope.
    pub fn steps_for(&self, scope: Scope) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(move |s| s.scopes.contains(&scope))
    }

    /// Resolves the scope: the requested one if supported, else the default.
    pub fn scope(&self, requested: Option<Scope>) -> Result<Scope> {
        let scope = requested.unwrap_or(self.default_scope);
        if self.scopes.contains(&scope) {
            Ok(scope)
        } else {
            Err(Error::UnsupportedScope {
                recipe: self.name.clone(),
                scope: scope.to_string(),
                supported: self
                    .scopes
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    }

    /// The parameter values: defaults overridden by `KEY=VALUE` pairs.
    pub fn param_values(&self, sets: &[String]) -> Result<BTreeMap<String, String>> {
        let mut values: BTreeMap<String, String> = self
            .params
            .iter()
            .map(|p| (p.name.clone(), p.default.clone()))
            .collect();
        for (key, value) in hostkit_core::parse_sets(sets)? {
            let (key, value) = (key.as_str(), value.as_str());
            let Some(param) = self.params.iter().find(|p| p.name == key) else {
                let names: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
                return Err(Error::UnknownParam {
                    recipe: self.name.clone(),
                    key: key.to_string(),
                    allowed: if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    },
                });
            };
            if !param.allowed.is_empty() && !param.allowed.iter().any(|a| a == value) {
                return Err(Error::BadParamValue {
                    recipe: self.name.clone(),
                    key: key.to_string(),
                    value: value.to_string(),
                    allowed: param.allowed.join(", "),
                });
            }
            values.insert(key.to_string(), value.to_string());
        }
        Ok(values)
    }
}

/// Variables every recipe may use in `{…}` placeholders, besides its parameters.
pub const BUILTIN_VARS: &[&str] = &["home", "config_home", "recipe"];

/// The values `when.override` parameters may take ([`Override::name`] of each, in order).
pub const OVERRIDE_VALUES: &[&str] = &[
    Override::Auto.name(),
    Override::Always.name(),
    Override::Never.name(),
];

/// The value of a `when.override` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Override {
    /// The step's own conditions decide.
    Auto,
    /// Apply the step whatever its conditions say.
    Always,
    /// Never apply the step.
    Never,
}

impl Override {
    /// The value as written (`--set PARAM=always`); `None` for any other text.
    pub fn parse(value: &str) -> Option<Override> {
        [Override::Auto, Override::Always, Override::Never]
            .into_iter()
            .find(|o| o.name() == value)
    }

    /// The value as written.
    pub const fn name(self) -> &'static str {
        match self {
            Override::Auto => "auto",
            Override::Always => "always",
            Override::Never => "never",
        }
    }
}

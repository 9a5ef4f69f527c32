//! Loading a recipe from its TOML text: strict (unknown keys are errors), every error naming
//! the file, line and column.

use std::collections::BTreeMap;

use toml_edit::ImDocument;

use super::{
    BUILTIN_VARS, OVERRIDE_VALUES, PackageNames, Param, Recipe, Scope, Step, Template, When,
};
use crate::error::{Error, Result};
use crate::steps::StepKind;
use crate::wording::{Fields, Source, WORDING, list};
use hostkit_core::{Braces, TemplateError};

const TOP_KEYS: &[&str] = &[
    "summary",
    "description",
    "scopes",
    "default_scope",
    "params",
    "packages",
    "steps",
];
const PARAM_KEYS: &[&str] = &["default", "allowed", "help"];
const PACKAGE_KEYS: &[&str] = &["dpkg", "rpm", "pacman"];
const STEP_KEYS: &[&str] = &["id", "kind", "summary", "why", "reaches", "scope", "when"];
const WHEN_KEYS: &[&str] = &[
    "package",
    "min_version",
    "below_version",
    "override",
    "exists",
    "param",
    "equals",
    "probe",
];
const SCOPES: &[&str] = &["user", "system"];

/// Parses one recipe file. `name` is the recipe's name (the file stem), `file` what errors show.
pub fn parse(name: &str, file: &str, text: &str) -> Result<Recipe> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid || name == "all" {
        return Err(Error::Recipe {
            file: file.to_string(),
            line: 1,
            column: 1,
            message: format!(
                "`{name}` is not a valid recipe name (the file's name without `.toml`): use a-z, 0-9 and `-`, starting with a letter, and not `all`"
            ),
        });
    }
    let src = Source::new(file, text);
    let doc = ImDocument::parse(text.to_string()).map_err(|e| {
        let message = e.message().trim().replace('\n', "; ");
        src.error(e.span(), format!("invalid TOML: {message}"))
    })?;
    let root = Fields::table(&src, &WORDING, doc.as_table(), "recipe", TOP_KEYS)?;
    let summary = root.required("summary")?;
    let description = root.string("description")?.unwrap_or_default();
    let scopes = parse_scopes(&root, "scopes")?.ok_or_else(|| {
        src.error(
            root.span(),
            "recipe: missing required key `scopes` (allowed values: user, system)",
        )
    })?;
    let default_scope = match root.choice("default_scope", SCOPES)? {
        Some(s) => Scope::parse(&s).unwrap_or(Scope::User),
        None => scopes[0],
    };
    if !scopes.contains(&default_scope) {
        return Err(root.error("default_scope", "must be one of the recipe's `scopes`"));
    }
    let params = parse_params(&root)?;
    let packages = parse_packages(&root)?;
    let mut vars: Vec<String> = BUILTIN_VARS.iter().map(|s| s.to_string()).collect();
    vars.extend(params.iter().map(|p| p.name.clone()));
    let ctx = StepContext {
        vars: &vars,
        params: &params,
        packages: &packages,
        scopes: &scopes,
    };
    let mut steps = Vec::new();
    if let Some(item) = root.get("steps") {
        let Some(array) = item.as_array_of_tables() else {
            return Err(root.error("steps", "expected an array of tables ([[steps]])"));
        };
        for (index, table) in array.iter().enumerate() {
            let step = parse_step(&src, table, index, &ctx)?;
            if let Some(dup) = steps.iter().find(|s: &&Step| {
                s.id == step.id && s.scopes.iter().any(|sc| step.scopes.contains(sc))
            }) {
                return Err(src.error(
                    table.span(),
                    format!(
                        "step `{}`: id already used by the step at {}",
                        step.id, dup.location
                    ),
                ));
            }
            steps.push(step);
        }
    }
    Ok(Recipe {
        name: name.to_string(),
        summary,
        description,
        source: file.to_string(),
        scopes,
        default_scope,
        params,
        packages,
        steps,
    })
}

fn parse_scopes(fields: &Fields<'_>, key: &str) -> Result<Option<Vec<Scope>>> {
    let Some(names) = fields.strings(key)? else {
        return Ok(None);
    };
    let mut scopes = Vec::new();
    for name in names {
        let scope = Scope::parse(&name).ok_or_else(|| {
            fields.error(
                key,
                format!("unknown scope `{name}`; allowed: {}", list(SCOPES)),
            )
        })?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    Ok(Some(scopes))
}

fn parse_params(root: &Fields<'_>) -> Result<Vec<Param>> {
    let Some(item) = root.get("params") else {
        return Ok(Vec::new());
    };
    let table = Fields::unchecked(root.source(), &WORDING, item, "params")?;
    let mut params = Vec::new();
    for name in table.keys() {
        let Some(item) = table.get(name) else {
            continue;
        };
        if BUILTIN_VARS.contains(&name) {
            return Err(table.error(name, "this name is reserved for a built-in variable"));
        }
        let fields = Fields::of(
            root.source(),
            &WORDING,
            item,
            &format!("params.{name}"),
            PARAM_KEYS,
        )?;
        let default = fields.required("default")?;
        let allowed = fields.strings("allowed")?.unwrap_or_default();
        if !allowed.is_empty() && !allowed.contains(&default) {
            return Err(fields.error(
                "default",
                format!("not one of the allowed values: {}", allowed.join(", ")),
            ));
        }
        params.push(Param {
            name: name.to_string(),
            default,
            allowed,
            help: fields.string("help")?.unwrap_or_default(),
        });
    }
    Ok(params)
}

fn parse_packages(root: &Fields<'_>) -> Result<BTreeMap<String, PackageNames>> {
    let mut packages = BTreeMap::new();
    let Some(item) = root.get("packages") else {
        return Ok(packages);
    };
    let table = Fields::unchecked(root.source(), &WORDING, item, "packages")?;
    for name in table.keys() {
        let Some(item) = table.get(name) else {
            continue;
        };
        let fields = Fields::of(
            root.source(),
            &WORDING,
            item,
            &format!("packages.{name}"),
            PACKAGE_KEYS,
        )?;
        packages.insert(
            name.to_string(),
            PackageNames {
                dpkg: fields.strings("dpkg")?.unwrap_or_default(),
                rpm: fields.strings("rpm")?.unwrap_or_default(),
                pacman: fields.strings("pacman")?.unwrap_or_default(),
            },
        );
    }
    Ok(packages)
}

/// What a step parser may check against: variables, parameters, packages, scopes.
pub(crate) struct StepContext<'a> {
    /// Names usable in `{…}`.
    pub vars: &'a [String],
    /// The recipe's parameters.
    pub params: &'a [Param],
    /// The recipe's logical packages.
    pub packages: &'a BTreeMap<String, PackageNames>,
    /// The recipe's scopes.
    pub scopes: &'a [Scope],
}

impl StepContext<'_> {
    /// Checks that every `{name}` in a string is a known variable.
    pub fn template(&self, fields: &Fields<'_>, key: &str, value: String) -> Result<Template> {
        Template::parse(&value, Braces::Strict, |name| {
            self.vars.iter().any(|v| v == name)
        })
        .map_err(|e| match e {
            TemplateError::Unknown { name } => fields.error(
                key,
                format!(
                    "unknown variable `{{{name}}}`; allowed: {}",
                    self.vars.join(", ")
                ),
            ),
            syntax => fields.error(key, syntax),
        })
    }

    /// Checks that a logical package is declared in `[packages]`.
    pub fn package(&self, fields: &Fields<'_>, key: &str, name: &str) -> Result<()> {
        if self.packages.contains_key(name) {
            Ok(())
        } else {
            let known: Vec<&str> = self.packages.keys().map(|k| k.as_str()).collect();
            Err(fields.error(
                key,
                format!(
                    "unknown package `{name}`; declared in [packages]: {}",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ))
        }
    }
}

fn parse_step(
    src: &Source,
    table: &toml_edit::Table,
    index: usize,
    ctx: &StepContext<'_>,
) -> Result<Step> {
    let item = toml_edit::Item::Table(table.clone());
    // The clone keeps spans; `Fields` borrows from it for the duration of this function.
    let what = format!("steps[{index}]");
    let fields = Fields::unchecked(src, &WORDING, &item, &what)?;
    let kind_name = fields.string("kind")?.ok_or_else(|| {
        src.error(
            table.span(),
            format!(
                "{what}: missing required key `kind`; allowed: {}",
                StepKind::names().join(", ")
            ),
        )
    })?;
    let kind = StepKind::from_name(&kind_name).ok_or_else(|| {
        fields.error(
            "kind",
            format!(
                "unknown step kind `{kind_name}`; allowed: {}",
                StepKind::names().join(", ")
            ),
        )
    })?;
    let mut allowed: Vec<&str> = STEP_KEYS.to_vec();
    allowed.extend_from_slice(kind.keys());
    let id = fields.required("id")?;
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(fields.error("id", "use letters, digits, `-` and `_` only"));
    }
    let what = format!("step `{id}`");
    let fields = Fields::of(src, &WORDING, &item, &what, &allowed)?;
    let scopes = parse_scopes(&fields, "scope")?.unwrap_or_else(|| ctx.scopes.to_vec());
    if let Some(bad) = scopes.iter().find(|s| !ctx.scopes.contains(s)) {
        return Err(fields.error(
            "scope",
            format!("scope `{bad}` is not in the recipe's `scopes`"),
        ));
    }
    let when = match fields.get("when") {
        None => When::default(),
        Some(item) => {
            let w = Fields::of(src, &WORDING, item, &format!("{what}.when"), WHEN_KEYS)?;
            let package = w.string("package")?;
            if let Some(p) = &package {
                ctx.package(&w, "package", p)?;
            }
            let min_version = w.string("min_version")?;
            let below_version = w.string("below_version")?;
            for (key, v) in [
                ("min_version", &min_version),
                ("below_version", &below_version),
            ] {
                if v.is_some() && package.is_none() {
                    return Err(w.error(key, "needs `package`"));
                }
            }
            let override_param = w.string("override")?;
            if let Some(name) = &override_param {
                match ctx.params.iter().find(|p| &p.name == name) {
                    None => return Err(w.error("override", format!("unknown parameter `{name}`"))),
                    Some(p)
                        if p.allowed
                            .iter()
                            .map(|s| s.as_str())
                            .ne(OVERRIDE_VALUES.iter().copied()) =>
                    {
                        return Err(w.error(
                            "override",
                            format!(
                                "parameter `{name}` must allow exactly: {}",
                                list(OVERRIDE_VALUES)
                            ),
                        ));
                    }
                    Some(_) => {}
                }
            }
            let exists = match w.string("exists")? {
                Some(p) => Some(ctx.template(&w, "exists", p)?),
                None => None,
            };
            let param_equals = match (w.string("param")?, w.string("equals")?) {
                (None, None) => None,
                (Some(name), Some(value)) => {
                    let Some(p) = ctx.params.iter().find(|p| p.name == name) else {
                        return Err(w.error("param", format!("unknown parameter `{name}`")));
                    };
                    if !p.allowed.is_empty() && !p.allowed.contains(&value) {
                        return Err(w.error(
                            "equals",
                            format!(
                                "`{value}` is not an allowed value of `{name}`: {}",
                                p.allowed.join(", ")
                            ),
                        ));
                    }
                    Some((name, value))
                }
                (Some(_), None) => return Err(w.error("param", "needs `equals`")),
                (None, Some(_)) => return Err(w.error("equals", "needs `param`")),
            };
            let guard = w.string("probe")?;
            if let Some(name) = &guard
                && !crate::probes::GUARDS.contains(&name.as_str())
            {
                return Err(w.error(
                    "probe",
                    format!(
                        "unknown guard probe `{name}`; allowed: {}",
                        crate::probes::GUARDS.join(", ")
                    ),
                ));
            }
            When {
                package,
                min_version,
                below_version,
                override_param,
                exists,
                param_equals,
                guard,
            }
        }
    };
    let spec = kind.parse(&fields, ctx)?;
    Ok(Step {
        id,
        summary: fields.string("summary")?.unwrap_or_default(),
        why: fields.string("why")?.unwrap_or_default(),
        reaches: fields.string("reaches")?.unwrap_or_default(),
        scopes,
        when,
        spec,
        location: src.location(table.span()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::Catalog;
    use std::path::Path;

    #[test]
    fn builtin_recipes_parse() {
        let catalog = Catalog::load(&[] as &[&Path]).unwrap();
        let names: Vec<&str> = catalog.recipes().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "gtk-legacy",
                "ngroups",
                "procps",
                "qt-gtk",
                "rtl8139",
                "udisks2-media"
            ]
        );
    }

    fn err(text: &str) -> String {
        parse("t", "t.toml", text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_file_line_column_and_allowed_values() {
        assert_eq!(
            err("summary = \"x\"\nscopes = [\"user\"]\nbogus = 1\n"),
            "t.toml:3:1: recipe: unknown key `bogus`; allowed: summary, description, scopes, default_scope, params, packages, steps"
        );
        let e = err(
            "summary = \"x\"\nscopes = [\"user\"]\n[[steps]]\nid = \"a\"\nkind = \"teleport\"\n",
        );
        assert!(e.starts_with("t.toml:5:8: steps[0]: `kind`: unknown step kind `teleport`; allowed: line, ini, file, gsettings, package, manual, probe"), "{e}");
        let e = err(
            "summary = \"x\"\nscopes = [\"user\"]\n[[steps]]\nid = \"a\"\nkind = \"line\"\npath = \"{nope}/x\"\nline = \"y\"\n",
        );
        assert!(
            e.starts_with("t.toml:6:8: step `a`: `path`: unknown variable `{nope}`"),
            "{e}"
        );
        let e = err("summary = \"x\"\nscopes = [\"user\" \"system\"]\n");
        assert!(e.starts_with("t.toml:2:"), "{e}");
    }

    #[test]
    fn params_are_checked() {
        let r = parse(
            "t",
            "t.toml",
            "summary = \"x\"\nscopes = [\"user\"]\n[params.theme]\ndefault = \"gtk3\"\nallowed = [\"gtk3\", \"qt5ct\"]\n",
        )
        .unwrap();
        assert_eq!(
            r.param_values(&["theme=qt5ct".into()]).unwrap()["theme"],
            "qt5ct"
        );
        assert_eq!(
            r.param_values(&["colour=red".into()])
                .unwrap_err()
                .to_string(),
            "recipe t: unknown parameter `colour`; allowed: theme"
        );
        assert_eq!(
            r.param_values(&["theme=kde".into()])
                .unwrap_err()
                .to_string(),
            "recipe t: bad value `kde` for parameter `theme`; allowed: gtk3, qt5ct"
        );
    }
}

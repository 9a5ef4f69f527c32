//! The module's arguments: the JSON object Ansible writes to the file named by `argv[1]`.
//!
//! That file is the task's instruction — which recipe, which state, which root — written by
//! Ansible for the user it connected as, who could run the module with any arguments anyway:
//! it is not checked for its owner as recipe files are. What it names still passes hostkit's
//! checks (the recipes and their files, the root, the user's home). It is read only when it
//! is a regular file of at most [`MAX_ARGS_BYTES`] (opened without blocking, so a FIFO is
//! refused at once), and every key is checked — unknown keys, wrong types and bad values fail
//! the task with Ansible's own wording, naming them. Ansible's internal `_ansible_*` keys are
//! ignored (new ones appear with new Ansible versions), except `_ansible_check_mode` and
//! `_ansible_diff`.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The largest arguments file read (real ones are a few hundred bytes).
pub const MAX_ARGS_BYTES: u64 = 1 << 20;

/// The parameters the module accepts (sorted, as listed in messages).
pub const PARAMETERS: &[&str] = &[
    "force", "recipe", "root", "scope", "set", "state", "user", "wait",
];

/// What the task asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// `apply` (`apply --dry-run` in check mode).
    Applied,
    /// `revert` (a preview in check mode).
    Reverted,
    /// `check`: reports, never changes anything.
    Checked,
}

impl State {
    /// The value as written in a task.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Applied => "applied",
            State::Reverted => "reverted",
            State::Checked => "checked",
        }
    }
}

/// The validated arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleArgs {
    /// The module's name as Ansible knows it (`_ansible_module_name`), for messages.
    pub name: String,
    /// `recipe`: one recipe name.
    pub recipe: String,
    /// `state` (default `applied`).
    pub state: State,
    /// `scope`: `user` or `system` (default: the recipe's own).
    pub scope: Option<hostkit_recipes::Scope>,
    /// `root`: an absolute path (default: the live system).
    pub root: Option<PathBuf>,
    /// `set`, as `KEY=VALUE` strings in key order.
    pub sets: Vec<String>,
    /// `user`: whose home a user-scope recipe configures.
    pub user: Option<String>,
    /// `force` (revert): overwrite files changed since apply.
    pub force: bool,
    /// `wait`: wait for another apply or revert of the scope instead of failing.
    pub wait: bool,
    /// `_ansible_check_mode`: change nothing, report what would change.
    pub check_mode: bool,
    /// `_ansible_diff`: return the per-file `diff`.
    pub diff: bool,
}

/// Reads the arguments file: a regular file, at most [`MAX_ARGS_BYTES`], never blocking.
pub fn read_file(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let what =
        |e: std::io::Error| format!("cannot read the arguments file {}: {e}", path.display());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(what)?;
    let meta = file.metadata().map_err(what)?;
    if !meta.is_file() {
        return Err(format!(
            "the arguments file {} is not a regular file",
            path.display()
        ));
    }
    if meta.len() > MAX_ARGS_BYTES {
        return Err(format!(
            "the arguments file {} is larger than {MAX_ARGS_BYTES} bytes",
            path.display()
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_ARGS_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(what)?;
    if bytes.len() as u64 > MAX_ARGS_BYTES {
        return Err(format!(
            "the arguments file {} is larger than {MAX_ARGS_BYTES} bytes",
            path.display()
        ));
    }
    String::from_utf8(bytes)
        .map_err(|_| format!("the arguments file {} is not UTF-8", path.display()))
}

/// A JSON value's type, as Ansible names it in messages.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// A boolean the way Ansible's `boolean()` reads one: JSON true/false, or yes/no, on/off,
/// true/false, 1/0 (any case) as text or numbers.
fn boolean(key: &str, v: &Value) -> Result<bool, String> {
    let word = match v {
        Value::Bool(b) => return Ok(*b),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.to_ascii_lowercase(),
        _ => String::new(),
    };
    match word.as_str() {
        "yes" | "on" | "true" | "y" | "t" | "1" | "1.0" => Ok(true),
        "no" | "off" | "false" | "n" | "f" | "0" | "0.0" => Ok(false),
        _ => Err(format!(
            "argument '{key}' is of type {} and we were unable to convert to bool: {v} is not a valid boolean",
            type_name(v)
        )),
    }
}

/// A plain string argument (text without NUL or line breaks).
fn text(key: &str, v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) if s.contains(['\0', '\n', '\r']) => Err(format!(
            "argument '{key}' must be one line of text without NUL characters"
        )),
        Value::String(s) => Ok(s.clone()),
        other => Err(format!(
            "argument '{key}' is of type {} and must be a string",
            type_name(other)
        )),
    }
}

/// `set`: a mapping of parameter names to scalars, as `KEY=VALUE` strings.
fn sets(v: &Value) -> Result<Vec<String>, String> {
    let Value::Object(map) = v else {
        return Err(format!(
            "argument 'set' is of type {} and must be a mapping of recipe parameters to values (set: {{platformtheme: gtk3}})",
            type_name(v)
        ));
    };
    let mut out = Vec::new();
    for (key, value) in map {
        let valid = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(format!(
                "argument 'set': {key:?} is not a parameter name (letters, digits, '_' and '-')"
            ));
        }
        let value = match value {
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            other => {
                return Err(format!(
                    "argument 'set': the value of {key} is of type {} and must be a string, number or boolean",
                    type_name(other)
                ));
            }
        };
        if value.contains(['\0', '\n', '\r']) {
            return Err(format!(
                "argument 'set': the value of {key} must be one line of text without NUL characters"
            ));
        }
        out.push(format!("{key}={value}"));
    }
    Ok(out)
}

/// Validates the arguments object. The error is the task's `msg`.
pub fn parse(text: &str) -> Result<ModuleArgs, String> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| format!("the arguments file is not valid JSON: {e}"))?;
    let Value::Object(map) = value else {
        return Err("the arguments file does not hold a JSON object".into());
    };
    from_map(&map)
}

fn from_map(map: &Map<String, Value>) -> Result<ModuleArgs, String> {
    let name = match map.get("_ansible_module_name") {
        Some(Value::String(n)) if !n.is_empty() && n.len() <= 200 => n.clone(),
        _ => "hostkit".to_string(),
    };
    let unknown: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|k| !k.starts_with("_ansible_") && !PARAMETERS.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "Unsupported parameters for ({name}) module: {}. Supported parameters include: {}.",
            unknown.join(", "),
            PARAMETERS.join(", ")
        ));
    }
    // A null value (an unset variable, `~`) is the same as leaving the key out.
    let get = |key: &str| map.get(key).filter(|v| !v.is_null());
    let recipe = match get("recipe") {
        None => return Err("missing required arguments: recipe".into()),
        Some(v) => text("recipe", v)?,
    };
    if recipe.is_empty() {
        return Err("argument 'recipe' is empty: name a recipe (`hostkit list`)".into());
    }
    if recipe == "all" {
        return Err(
            "recipe 'all' is for `hostkit check all`: name one recipe per task (loop over them)"
                .into(),
        );
    }
    let state = match get("state").map(|v| text("state", v)).transpose()? {
        None => State::Applied,
        Some(s) => match s.as_str() {
            "applied" => State::Applied,
            "reverted" => State::Reverted,
            "checked" => State::Checked,
            _ => {
                return Err(format!(
                    "value of state must be one of: applied, reverted, checked, got: {s}"
                ));
            }
        },
    };
    let scope = match get("scope").map(|v| text("scope", v)).transpose()? {
        None => None,
        Some(s) => match s.as_str() {
            "user" => Some(hostkit_recipes::Scope::User),
            "system" => Some(hostkit_recipes::Scope::System),
            _ => {
                return Err(format!(
                    "value of scope must be one of: user, system, got: {s}"
                ));
            }
        },
    };
    let root = match get("root").map(|v| text("root", v)).transpose()? {
        None => None,
        Some(r) if Path::new(&r).is_absolute() => Some(PathBuf::from(r)),
        Some(r) => {
            return Err(format!(
                "argument 'root' must be an absolute path, got: {r:?}"
            ));
        }
    };
    let user = get("user").map(|v| text("user", v)).transpose()?;
    let flag = |key: &str| get(key).map(|v| boolean(key, v)).transpose();
    Ok(ModuleArgs {
        name,
        recipe,
        state,
        scope,
        root,
        sets: get("set").map(sets).transpose()?.unwrap_or_default(),
        user,
        force: flag("force")?.unwrap_or(false),
        wait: flag("wait")?.unwrap_or(false),
        check_mode: flag("_ansible_check_mode")?.unwrap_or(false),
        diff: flag("_ansible_diff")?.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(json: &str) -> Result<ModuleArgs, String> {
        parse(json)
    }

    #[test]
    fn a_full_task_with_ansible_keys() {
        let args = parsed(
            r#"{"recipe": "qt-gtk", "state": "reverted", "scope": "system", "root": "/srv/image",
                "set": {"platformtheme": "gtk3", "qt4": false, "n": 3}, "user": "alice",
                "force": "yes", "wait": true,
                "_ansible_check_mode": true, "_ansible_diff": true, "_ansible_no_log": false,
                "_ansible_module_name": "hostkit", "_ansible_some_future_key": [1, 2],
                "_ansible_tmpdir": null}"#,
        )
        .unwrap();
        assert_eq!(args.recipe, "qt-gtk");
        assert_eq!(args.state, State::Reverted);
        assert_eq!(args.scope, Some(hostkit_recipes::Scope::System));
        assert_eq!(args.root.as_deref(), Some(Path::new("/srv/image")));
        assert_eq!(args.sets, ["n=3", "platformtheme=gtk3", "qt4=false"]);
        assert_eq!(args.user.as_deref(), Some("alice"));
        assert!(args.force && args.wait && args.check_mode && args.diff);
    }

    #[test]
    fn defaults_and_nulls() {
        let args = parsed(r#"{"recipe": "gtk-legacy", "scope": null, "root": null}"#).unwrap();
        assert_eq!(args.state, State::Applied);
        assert_eq!((args.scope, args.root, args.user), (None, None, None));
        assert!(args.sets.is_empty());
        assert!(!args.force && !args.wait && !args.check_mode && !args.diff);
        assert_eq!(args.name, "hostkit");
    }

    #[test]
    fn every_mistake_is_named() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"recipe": "x", "bogus": 1, "stat": "applied", "_ansible_diff": false}"#,
                "Unsupported parameters for (hostkit) module: bogus, stat. Supported parameters include: force, recipe, root, scope, set, state, user, wait.",
            ),
            (
                r#"{"state": "applied"}"#,
                "missing required arguments: recipe",
            ),
            (
                r#"{"recipe": "x", "state": "present"}"#,
                "value of state must be one of: applied, reverted, checked, got: present",
            ),
            (
                r#"{"recipe": "x", "scope": "global"}"#,
                "value of scope must be one of: user, system, got: global",
            ),
            (
                r#"{"recipe": "x", "root": "srv/image"}"#,
                "argument 'root' must be an absolute path",
            ),
            (r#"{"recipe": 7}"#, "argument 'recipe' is of type int"),
            (r#"{"recipe": "a\nb"}"#, "must be one line"),
            (r#"{"recipe": "all"}"#, "name one recipe per task"),
            (r#"{"recipe": ""}"#, "argument 'recipe' is empty"),
            (
                r#"{"recipe": "x", "set": ["a=b"]}"#,
                "argument 'set' is of type list and must be a mapping",
            ),
            (
                r#"{"recipe": "x", "set": {"a=b": "c"}}"#,
                "\"a=b\" is not a parameter name",
            ),
            (
                r#"{"recipe": "x", "set": {"a": {"b": 1}}}"#,
                "the value of a is of type dict",
            ),
            (
                r#"{"recipe": "x", "force": "maybe"}"#,
                "argument 'force' is of type str and we were unable to convert to bool",
            ),
            (
                r#"{"recipe": "x", "_ansible_check_mode": "sometimes"}"#,
                "argument '_ansible_check_mode'",
            ),
            ("[1, 2]", "does not hold a JSON object"),
            ("{\"recipe\": ", "not valid JSON"),
        ];
        for (json, want) in cases {
            let err = parsed(json).unwrap_err();
            assert!(err.contains(want), "{json}: {err}");
        }
    }

    #[test]
    fn the_module_name_comes_from_ansible() {
        let err =
            parsed(r#"{"recipe": "x", "nope": 1, "_ansible_module_name": "hk"}"#).unwrap_err();
        assert!(
            err.starts_with("Unsupported parameters for (hk) module: nope."),
            "{err}"
        );
    }

    #[test]
    fn the_file_is_read_only_when_it_is_a_small_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("args");
        std::fs::write(&ok, r#"{"recipe": "x"}"#).unwrap();
        assert_eq!(read_file(&ok).unwrap(), r#"{"recipe": "x"}"#);
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b' '; MAX_ARGS_BYTES as usize + 1]).unwrap();
        assert!(read_file(&big).unwrap_err().contains("larger than"));
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(read_file(&fifo).unwrap_err().contains("not a regular file"));
        assert!(
            read_file(dir.path())
                .unwrap_err()
                .contains("not a regular file")
        );
        let missing = dir.path().join("missing");
        assert!(read_file(&missing).unwrap_err().contains("cannot read"));
    }
}

//! The JSON contract: `docs/json.md` read as the schema and the real output held to it — every
//! field printed is documented with its type, every documented field is printed unless marked
//! optional, enums hold only the documented values, `schema_version` is the contract's version.
//! The goldens (`tests/golden/`) pin a few outputs byte for byte; these parse every shape.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use serde_json::Value;

use crate::recipes::{dpkg_status, hk, in_root};
use crate::util::{TestDir, hostkit, run, texts};

/// A type in `docs/json.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ty {
    Integer,
    String,
    Boolean,
    Enum(Vec<String>),
    OrNull(Box<Ty>),
    Array(Box<Ty>),
    Map(Box<Ty>),
    Shape(String),
}

#[derive(Debug)]
struct Field {
    ty: Ty,
    optional: bool,
}

type Shapes = BTreeMap<String, BTreeMap<String, Field>>;

fn parse_type(s: &str) -> Ty {
    let s = s.trim();
    if let Some(inner) = s.strip_suffix(" or null") {
        return Ty::OrNull(Box::new(parse_type(inner)));
    }
    if let Some(inner) = s.strip_prefix("array of ") {
        return Ty::Array(Box::new(parse_type(inner)));
    }
    if let Some(inner) = s.strip_prefix("map of ") {
        return Ty::Map(Box::new(parse_type(inner)));
    }
    if let Some(list) = s.strip_prefix("enum(").and_then(|r| r.strip_suffix(')')) {
        return Ty::Enum(list.split(", ").map(str::to_string).collect());
    }
    match s {
        "integer" => Ty::Integer,
        "string" => Ty::String,
        "boolean" => Ty::Boolean,
        name => Ty::Shape(name.to_string()),
    }
}

/// The shapes of `docs/json.md`: each table after a `<!-- shape: NAME -->` line, one row per
/// field (`` | `name` | `type`[, optional] | meaning | ``).
fn parse_doc(text: &str) -> Shapes {
    let mut shapes = Shapes::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(name) = line
            .strip_prefix("<!-- shape: ")
            .and_then(|r| r.strip_suffix(" -->"))
        {
            assert!(
                !shapes.contains_key(name),
                "docs/json.md: shape {name} defined twice"
            );
            shapes.insert(name.to_string(), BTreeMap::new());
            current = Some(name.to_string());
            continue;
        }
        if line.starts_with('#') {
            current = None;
            continue;
        }
        let (Some(shape), Some(row)) = (&current, line.strip_prefix("| `")) else {
            continue;
        };
        let cells: Vec<&str> = row.split(" | ").collect();
        assert!(cells.len() >= 3, "docs/json.md: bad row {line:?}");
        let name = cells[0].trim_end_matches('`');
        let ty = cells[1]
            .split('`')
            .nth(1)
            .unwrap_or_else(|| panic!("docs/json.md: no `type` in {line:?}"));
        let fields = shapes.get_mut(shape).unwrap();
        let old = fields.insert(
            name.to_string(),
            Field {
                ty: parse_type(ty),
                optional: cells[1].contains("optional"),
            },
        );
        assert!(old.is_none(), "docs/json.md: {shape}.{name} listed twice");
    }
    shapes
}

fn shapes() -> &'static Shapes {
    static SHAPES: OnceLock<Shapes> = OnceLock::new();
    SHAPES.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/json.md");
        parse_doc(&std::fs::read_to_string(&path).expect("docs/json.md"))
    })
}

fn check(ty: &Ty, v: &Value, at: &str, errors: &mut Vec<String>) {
    let mut wrong = |want: &str| errors.push(format!("{at}: want {want}, got {v}"));
    match ty {
        Ty::Integer if v.is_u64() || v.is_i64() => {}
        Ty::Integer => wrong("an integer"),
        Ty::String if v.is_string() => {}
        Ty::String => wrong("a string"),
        Ty::Boolean if v.is_boolean() => {}
        Ty::Boolean => wrong("a boolean"),
        Ty::Enum(values) => match v.as_str() {
            Some(s) if values.iter().any(|x| x == s) => {}
            _ => wrong(&format!("one of {values:?}")),
        },
        Ty::OrNull(_) if v.is_null() => {}
        Ty::OrNull(inner) => check(inner, v, at, errors),
        Ty::Array(inner) => match v.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    check(inner, item, &format!("{at}[{i}]"), errors);
                }
            }
            None => wrong("an array"),
        },
        Ty::Map(inner) => match v.as_object() {
            Some(map) => {
                for (k, item) in map {
                    check(inner, item, &format!("{at}.{k}"), errors);
                }
            }
            None => wrong("an object"),
        },
        Ty::Shape(name) => {
            let fields = shapes()
                .get(name)
                .unwrap_or_else(|| panic!("docs/json.md has no shape {name}"));
            let Some(obj) = v.as_object() else {
                return wrong(&format!("a {name} object"));
            };
            for (key, item) in obj {
                match fields.get(key) {
                    Some(f) => check(&f.ty, item, &format!("{at}.{key}"), errors),
                    None => errors.push(format!(
                        "{at}.{key}: printed but not in docs/json.md (shape {name})"
                    )),
                }
            }
            for (key, f) in fields {
                if !f.optional && !obj.contains_key(key) {
                    errors.push(format!(
                        "{at}.{key}: in docs/json.md (shape {name}) but not printed"
                    ));
                }
            }
            if fields.contains_key("schema_version")
                && obj.get("schema_version")
                    != Some(&Value::from(hostkit_core::JSON_SCHEMA_VERSION))
            {
                errors.push(format!(
                    "{at}.schema_version: want {}",
                    hostkit_core::JSON_SCHEMA_VERSION
                ));
            }
        }
    }
}

/// Asserts that `v` is the shape `name` of `docs/json.md`, listing every difference.
#[track_caller]
pub(crate) fn assert_shape(name: &str, v: &Value) {
    let mut errors = Vec::new();
    check(&Ty::Shape(name.into()), v, name, &mut errors);
    assert!(
        errors.is_empty(),
        "output differs from docs/json.md:\n{}\n\nthe output:\n{}",
        errors.join("\n"),
        serde_json::to_string_pretty(v).unwrap()
    );
}

/// Parses stdout: exactly one JSON value.
#[track_caller]
pub(crate) fn parse(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not one JSON value ({e}):\n{stdout}"))
}

#[test]
fn docs_json_md_is_a_complete_schema() {
    let shapes = shapes();
    fn refs(ty: &Ty, out: &mut Vec<String>) {
        match ty {
            Ty::Shape(n) => out.push(n.clone()),
            Ty::OrNull(t) | Ty::Array(t) | Ty::Map(t) => refs(t, out),
            _ => {}
        }
    }
    for (shape, fields) in shapes {
        assert!(!fields.is_empty(), "shape {shape} has no fields");
        for (name, f) in fields {
            let mut names = Vec::new();
            refs(&f.ty, &mut names);
            for n in names {
                assert!(shapes.contains_key(&n), "{shape}.{name}: unknown type {n}");
            }
        }
    }
    // Every top-level shape carries the version, and the page names it.
    for top in [
        "report",
        "check-error",
        "list-entry",
        "recipe",
        "tun-status",
        "module-result",
    ] {
        assert_eq!(
            shapes[top].get("schema_version").map(|f| &f.ty),
            Some(&Ty::Integer),
            "{top}"
        );
    }
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/json.md"))
        .unwrap();
    assert!(
        text.contains(&format!(
            "this page describes **version {}**",
            hostkit_core::JSON_SCHEMA_VERSION
        )),
        "docs/json.md names another version"
    );
}

#[test]
fn recipe_commands_print_what_docs_json_md_says() {
    let dir = TestDir::new();
    dir.write("home/u/.profile", "# profile\n");
    dir.write("etc/environment", "PATH=\"/usr/bin\"\n");
    dpkg_status(&dir, &[("qt5-gtk-platformtheme", "5.15.8+dfsg-11")]);
    let json = |args: &[&str], codes: &[i32]| -> Value {
        let out = run(&mut in_root(&dir, args));
        let (stdout, stderr) = texts(&out);
        let code = out.status.code().unwrap_or(-1);
        assert!(codes.contains(&code), "{args:?}: exit {code}\n{stderr}");
        parse(&stdout)
    };
    let list = parse(&texts(&run(hostkit().args(["list", "--format", "json"]))).0);
    let entries = list.as_array().expect("list: an array");
    assert!(!entries.is_empty(), "list: no recipe");
    for entry in entries {
        assert_shape("list-entry", entry);
    }
    let show = parse(&texts(&run(hostkit().args(["show", "qt-gtk", "--format", "json"]))).0);
    assert_shape("recipe", &show);
    let system = ["--scope", "system", "--format", "json"];
    // Every action, with file edits, reported commands (a package under --root) and probes.
    for (args, codes) in [
        (
            &["check", "gtk-legacy", "--format", "json"][..],
            &[0, 1][..],
        ),
        (&[&["check", "qt-gtk"][..], &system].concat(), &[0, 1]),
        (
            &[&["apply", "qt-gtk", "--dry-run"][..], &system].concat(),
            &[0],
        ),
        (&[&["apply", "qt-gtk"][..], &system].concat(), &[0, 1]),
        (&[&["apply", "qt-gtk"][..], &system].concat(), &[0, 1]),
        (&[&["check", "rtl8139"][..], &system].concat(), &[0, 1]),
        (&[&["revert", "qt-gtk"][..], &system].concat(), &[0]),
        (&[&["revert", "qt-gtk"][..], &system].concat(), &[0]),
    ] {
        let report = json(args, codes);
        assert_shape("report", &report);
    }
    let all = json(&["check", "all", "--format", "json"], &[0, 1]);
    let reports = all.as_array().expect("check all: an array");
    assert!(!reports.is_empty(), "check all: no report");
    for report in reports {
        assert_shape("report", report);
    }
    // A recipe that cannot be checked: its element is a check-error.
    std::fs::remove_file(dir.join("home/u/.profile")).unwrap();
    std::fs::create_dir(dir.join("home/u/.profile")).unwrap();
    let mut cmd = hk(Path::new("/home/u"));
    cmd.args(["check", "all", "--format", "json", "--root"])
        .arg(dir.path());
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(2));
    let all = parse(&texts(&out).0);
    let mut errors = 0;
    for element in all.as_array().unwrap() {
        if element.get("error").is_some() {
            assert_shape("check-error", element);
            errors += 1;
        } else {
            assert_shape("report", element);
        }
    }
    assert_eq!(errors, 1, "{all}");
}

#[test]
fn tun_status_prints_what_docs_json_md_says() {
    // `tun status` needs CAP_NET_ADMIN.
    require_root!();
    // No tunnel here: the devices are absent, nothing recorded.
    let run_dir = TestDir::new();
    let out = run(hostkit()
        .args(["tun", "status", "--format", "json"])
        .env("HOSTKIT_RUN_DIR", run_dir.join("run")));
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    let status = parse(&stdout);
    assert_shape("tun-status", &status);
    assert!(status["relay"].is_null(), "{stdout}");
    // A running relay with a stage on its path, dual stack.
    let ns = crate::util::NetNs::new();
    let dir = TestDir::new();
    let up = crate::tun::Up::start(
        &ns,
        &dir,
        "simple",
        &[],
        &[
            "--addr0",
            "10.0.0.1",
            "--addr1",
            "10.0.0.2",
            "--addr0",
            "fd00::1",
            "--addr1",
            "fd00::2",
            "--impair",
            "delay 1ms",
            "--seed",
            "1",
        ],
    );
    crate::util::run_ok(&mut ns.exec(["ping", "-c", "1", "-W", "2", "10.0.0.2"]));
    let stdout = crate::util::run_ok(&mut up.hostkit("status", &["--format", "json"]));
    let status = parse(&stdout);
    assert_shape("tun-status", &status);
    assert_eq!(status["relay"]["running"], true, "{stdout}");
    assert!(
        !status["relay"]["stages"].as_array().unwrap().is_empty(),
        "{stdout}"
    );
    assert!(!status["paths"].as_array().unwrap().is_empty(), "{stdout}");
    let (exit, _, stderr) = up.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(exit.success(), "{stderr}");
}

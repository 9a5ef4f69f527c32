//! hostkit as an Ansible binary module (`hostkit-ansible`, `docs/ansible.md`): the protocol,
//! driven directly (one JSON object on stdout whatever happens, check mode changing nothing),
//! then the example of `examples/ansible/` with the real ansible-core from PyPI, in the virtual
//! environment `.ci/deps` makes (`HOSTKIT_ANSIBLE_VENV`, default `/opt/hostkit-ci/ansible`),
//! against localhost (`connection: local`) and a temporary root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::json::{assert_shape, parse};
use crate::recipes::{same_tree, snapshot};
use crate::util::{TestDir, is_root, run, run_with_timeout, skip, texts};

fn module_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hostkit-ansible"))
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ansible")
}

/// The module with a clean environment.
fn module() -> Command {
    let mut cmd = Command::new(module_bin());
    for var in [
        "SUDO_USER",
        "SUDO_UID",
        "SUDO_GID",
        "PKEXEC_UID",
        "HOSTKIT_FAIL_AFTER_STEP",
        "XDG_CONFIG_HOME",
        "XDG_STATE_HOME",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_BACKTRACE", "0");
    cmd
}

/// Runs the module on an arguments file holding `args`: stdout must be exactly one JSON object
/// (and a newline) of the documented shape; exit 0, or 1 with `failed: true`.
fn call(dir: &TestDir, args: &Value) -> Value {
    let file = dir.write("args.json", serde_json::to_vec(args).unwrap());
    result_of(&run(module().arg(file)))
}

fn result_of(out: &std::process::Output) -> Value {
    let (stdout, stderr) = texts(out);
    assert!(
        stdout.ends_with("}\n"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let result = parse(&stdout);
    assert_shape("module-result", &result);
    let failed = result["failed"].as_bool().unwrap();
    assert_eq!(
        out.status.code(),
        Some(if failed { 1 } else { 0 }),
        "{stdout}\n{stderr}"
    );
    result
}

/// The example's image (`demo-root.sh`): alice is uid 1000 as root, else whoever runs the tests
/// (only root may configure another user's home).
pub(crate) fn demo_root(dir: &TestDir) -> PathBuf {
    let root = dir.join("image");
    let uid = if is_root() {
        1000
    } else {
        nix::unistd::getuid().as_raw()
    };
    let out = run(Command::new("sh")
        .arg(example().join("demo-root.sh"))
        .arg(&root)
        .env("ALICE_UID", uid.to_string()));
    assert!(out.status.success(), "{}", texts(&out).1);
    root
}

fn gtk_legacy(root: &Path, extra: Value) -> Value {
    let mut args = json!({
        "recipe": "gtk-legacy",
        "root": root,
        "user": "alice",
        "set": {"settings_ini": "always"},
        "_ansible_diff": true,
        "_ansible_verbosity": 0,
        "_ansible_version": "2.19.14",
        "_ansible_module_name": "hostkit",
        "_ansible_tmpdir": null,
        "_ansible_selinux_special_fs": ["fuse", "nfs"],
    });
    for (k, v) in extra.as_object().unwrap() {
        args[k] = v.clone();
    }
    args
}

const PROFILE: &str = "# ~/.profile: login shells\n[ -f ~/.bashrc ] && . ~/.bashrc\n";
const SETTINGS: &str = "[Settings]\ngtk-overlay-scrolling=false\n";

#[test]
fn the_module_answers_one_json_object_whatever_it_is_given() {
    let dir = TestDir::new();
    let failed = |result: &Value, want: &str| {
        assert_eq!(result["failed"], true, "{result}");
        assert_eq!(result["changed"], false, "{result}");
        let msg = result["msg"].as_str().unwrap();
        assert!(msg.contains(want), "want {want:?} in {msg:?}");
    };
    // Not run by Ansible.
    failed(&result_of(&run(&mut module())), "is an Ansible module");
    failed(
        &result_of(&run(module().args(["a", "b"]))),
        "is an Ansible module",
    );
    failed(
        &result_of(&run(module().arg(dir.join("missing")))),
        "cannot read the arguments file",
    );
    failed(
        &result_of(&run(module().arg(dir.path()))),
        "is not a regular file",
    );
    // A FIFO is refused at once, never waited on.
    let fifo = dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    failed(
        &result_of(&run_with_timeout(module().arg(&fifo), 10)),
        "is not a regular file",
    );
    let file = dir.write("junk", "recipe=gtk-legacy");
    failed(&result_of(&run(module().arg(file))), "not valid JSON");
    // Mistakes in the task, named.
    for (args, want) in [
        (
            json!({"recipe": "gtk-legacy", "stat": "applied", "_ansible_check_mode": false}),
            "Unsupported parameters for (hostkit) module: stat. Supported parameters include: force, recipe, root, scope, set, state, user, wait.",
        ),
        (json!({"root": "/"}), "missing required arguments: recipe"),
        (
            json!({"recipe": "gtk-legacy", "state": "present"}),
            "value of state must be one of: applied, reverted, checked, got: present",
        ),
        (
            json!({"recipe": "gtk-lagacy", "_ansible_check_mode": true}),
            "unknown recipe `gtk-lagacy`; available: gtk-legacy,",
        ),
        (
            json!({"recipe": "qt-gtk", "set": {"platformtheme": "kde"}, "_ansible_check_mode": true}),
            "bad value `kde` for parameter `platformtheme`; allowed: gtk3, xdgdesktopportal",
        ),
        (
            json!({"recipe": "qt-gtk", "set": {"colour": "blue"}, "_ansible_check_mode": true}),
            "colour",
        ),
        (
            json!({"recipe": "qt-gtk", "root": "relative/dir"}),
            "argument 'root' must be an absolute path",
        ),
    ] {
        failed(&call(&dir, &args), want);
    }
}

#[test]
fn check_mode_changes_nothing_and_predicts_apply_and_revert() {
    let dir = TestDir::new();
    let root = demo_root(&dir);
    let image = snapshot(&root);
    let profile = format!("{}/home/alice/.profile", root.display());
    let settings = format!("{}/home/alice/.config/gtk-3.0/settings.ini", root.display());
    let applying = json!([
        {"before": PROFILE, "after": format!("{PROFILE}export GTK_OVERLAY_SCROLLING=0\n"),
         "before_header": profile, "after_header": profile},
        {"before": "", "after": SETTINGS,
         "before_header": format!("{settings} (absent)"), "after_header": settings},
    ]);
    // --check --diff: the diff, and not a byte written (not even hostkit's state).
    let check = call(
        &dir,
        &gtk_legacy(&root, json!({"_ansible_check_mode": true})),
    );
    assert_eq!(check["changed"], true, "{check}");
    assert_eq!(check["diff"], applying, "{check}");
    same_tree(&snapshot(&root), &image, "check mode wrote");
    // `state: checked` reports, never changes.
    let checked = call(&dir, &gtk_legacy(&root, json!({"state": "checked"})));
    assert_eq!(
        (&checked["changed"], &checked["would_change"]),
        (&json!(false), &json!(true)),
        "{checked}"
    );
    same_tree(&snapshot(&root), &image, "state: checked wrote");
    // The real run does what check mode said.
    let applied = call(&dir, &gtk_legacy(&root, json!({})));
    assert_eq!(applied["changed"], true, "{applied}");
    assert_eq!(applied["diff"], applying, "{applied}");
    assert_eq!(
        std::fs::read_to_string(&settings).unwrap(),
        SETTINGS,
        "{applied}"
    );
    let done = snapshot(&root);
    for extra in [json!({}), json!({"_ansible_check_mode": true})] {
        let again = call(&dir, &gtk_legacy(&root, extra));
        assert_eq!(again["changed"], false, "{again}");
        assert_eq!(again["diff"], json!([]), "{again}");
    }
    let checked = call(&dir, &gtk_legacy(&root, json!({"state": "checked"})));
    assert_eq!(checked["would_change"], false, "{checked}");
    // Reverting in check mode: the reverse diff, nothing written.
    let reverting: Vec<Value> = applying
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            json!({"before": d["after"], "after": d["before"],
                   "before_header": d["after_header"], "after_header": d["before_header"]})
        })
        .collect();
    let preview = call(
        &dir,
        &gtk_legacy(
            &root,
            json!({"state": "reverted", "_ansible_check_mode": true}),
        ),
    );
    assert_eq!(preview["changed"], true, "{preview}");
    assert_eq!(preview["diff"], json!(reverting), "{preview}");
    same_tree(&snapshot(&root), &done, "revert's check mode wrote");
    let reverted = call(&dir, &gtk_legacy(&root, json!({"state": "reverted"})));
    assert_eq!(reverted["changed"], true, "{reverted}");
    assert_eq!(reverted["diff"], json!(reverting), "{reverted}");
    same_tree(&snapshot(&root), &image, "revert left a difference");
    let again = call(&dir, &gtk_legacy(&root, json!({"state": "reverted"})));
    assert_eq!(again["changed"], false, "{again}");
}

/// The venv's `tool` (`ansible-playbook`, `ansible-doc`), or `None` after saying why (a failure
/// under CI).
pub(crate) fn ansible_tool(tool: &str) -> Option<PathBuf> {
    let venv = std::env::var_os("HOSTKIT_ANSIBLE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/hostkit-ci/ansible"));
    let bin = venv.join("bin").join(tool);
    if bin.is_file() {
        Some(bin)
    } else {
        skip(&format!(
            "{} is missing: `bash .ci/deps` installs ansible-core from PyPI in a virtual environment there (HOSTKIT_ANSIBLE_VENV)",
            bin.display()
        ));
        None
    }
}

/// A copy of the example with the module installed as `library/hostkit`, and a private Ansible
/// home, configuration and temporary directories.
struct Example {
    dir: TestDir,
    ex: PathBuf,
}

impl Example {
    fn new() -> Example {
        let dir = TestDir::new();
        let ex = dir.join("ansible");
        for file in [
            "inventory.ini",
            "site.yml",
            "demo-root.sh",
            "library/hostkit.yml",
        ] {
            dir.write(
                Path::new("ansible").join(file),
                std::fs::read(example().join(file)).unwrap(),
            );
        }
        let installed = ex.join("library/hostkit");
        std::fs::copy(module_bin(), &installed).unwrap();
        // Ansible copies the module for every task: without the test build's debug information
        // it is 20 times smaller (best effort; the module runs the same either way).
        let _ = Command::new("strip").arg(&installed).output();
        Example { dir, ex }
    }

    fn command(&self, tool: &Path, args: &[&str]) -> Command {
        let mut cmd = ansible_command(tool, &self.dir);
        cmd.args(args).current_dir(&self.ex);
        cmd
    }
}

/// `tool` of the venv with a private Ansible home, configuration (`ansible.cfg` in `dir`, written
/// empty when missing) and temporary directories in `dir`, and a clean environment.
pub(crate) fn ansible_command(tool: &Path, dir: &TestDir) -> Command {
    if !dir.join("ansible.cfg").exists() {
        dir.write("ansible.cfg", "");
    }
    let venv_bin = tool.parent().unwrap();
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(tool);
    cmd.env("PATH", path)
        .env("LC_ALL", "C.UTF-8")
        .env("COLUMNS", "80")
        .env("ANSIBLE_CONFIG", dir.join("ansible.cfg"))
        .env("ANSIBLE_HOME", dir.join("ansible-home"))
        .env("ANSIBLE_LOCAL_TEMP", dir.join("ansible-local"))
        .env("ANSIBLE_REMOTE_TMP", dir.join("ansible-remote"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env_remove("ANSIBLE_FORCE_COLOR")
        .env_remove("ANSIBLE_STDOUT_CALLBACK")
        .env_remove("SUDO_USER")
        .env_remove("SUDO_UID")
        .env_remove("SUDO_GID")
        .env_remove("PKEXEC_UID")
        .env_remove("HOSTKIT_FAIL_AFTER_STEP");
    cmd
}

/// `PLAY RECAP`'s counters for localhost.
fn recap(out: &str) -> BTreeMap<String, u32> {
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with("localhost") && l.contains("changed="))
        .unwrap_or_else(|| panic!("no PLAY RECAP in:\n{out}"));
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

/// The README's shown output of `name`: the fenced block after `<!-- output: NAME -->`.
fn readme_block(name: &str) -> String {
    let readme = std::fs::read_to_string(example().join("README.md")).unwrap();
    let marker = format!("<!-- output: {name} -->");
    let after = readme
        .split_once(&marker)
        .unwrap_or_else(|| panic!("examples/ansible/README.md has no {marker}"))
        .1;
    let body = after.split_once("```text\n").unwrap().1;
    body.split_once("```").unwrap().0.to_string()
}

fn trimmed(text: &str) -> String {
    text.lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
}

#[test]
fn the_ansible_example_checks_applies_and_reverts() {
    let Some(playbook) = ansible_tool("ansible-playbook") else {
        return;
    };
    let ex = Example::new();
    let root = demo_root(&ex.dir);
    let image = snapshot(&root);
    let root_var = format!("hostkit_root={}", root.display());
    let play = |extra: &[&str]| -> String {
        let mut args = vec!["-i", "inventory.ini", "site.yml", "-e", &root_var];
        args.extend_from_slice(extra);
        let out = run(&mut ex.command(&playbook, &args));
        let (stdout, stderr) = texts(&out);
        assert!(out.status.success(), "{args:?}:\n{stdout}\n{stderr}");
        stdout
    };
    // --check --diff: hostkit's diffs, changed, and nothing written.
    let out = play(&["--check", "--diff"]);
    assert_eq!(recap(&out)["changed"], 2, "{out}");
    assert_eq!(recap(&out)["failed"], 0, "{out}");
    let r = root.display();
    for want in [
        format!("--- before: {r}/home/alice/.profile\n+++ after: {r}/home/alice/.profile\n"),
        " [ -f ~/.bashrc ] && . ~/.bashrc\n+export GTK_OVERLAY_SCROLLING=0\n".into(),
        format!(
            "--- before: {r}/home/alice/.config/gtk-3.0/settings.ini (absent)\n+++ after: {r}/home/alice/.config/gtk-3.0/settings.ini\n"
        ),
        "+[Settings]\n+gtk-overlay-scrolling=false\n".into(),
        format!("--- before: {r}/etc/environment\n"),
        " PATH=\"/usr/local/bin:/usr/bin:/bin\"\n+QT_QPA_PLATFORMTHEME=gtk3\n".into(),
    ] {
        assert!(out.contains(&want), "want {want:?} in:\n{out}");
    }
    same_tree(&snapshot(&root), &image, "--check wrote");
    // The README shows this very output (for the image at /tmp/hostkit-demo).
    let shown = out.replace(&r.to_string(), "/tmp/hostkit-demo");
    assert_eq!(
        trimmed(&shown),
        trimmed(&readme_block("check-diff")),
        "examples/ansible/README.md no longer shows what `--check --diff` prints"
    );
    // A real run applies; a second one changes nothing.
    let out = play(&[]);
    assert_eq!(recap(&out)["changed"], 2, "{out}");
    assert_eq!(
        std::fs::read_to_string(root.join("home/alice/.profile")).unwrap(),
        format!("{PROFILE}export GTK_OVERLAY_SCROLLING=0\n")
    );
    assert_eq!(
        std::fs::read_to_string(root.join("home/alice/.config/gtk-3.0/settings.ini")).unwrap(),
        SETTINGS
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/environment")).unwrap(),
        "PATH=\"/usr/local/bin:/usr/bin:/bin\"\nQT_QPA_PLATFORMTHEME=gtk3\n"
    );
    let out = play(&[]);
    assert_eq!(recap(&out)["changed"], 0, "{out}");
    // state: reverted puts every file back, byte for byte (modes and owners too).
    let out = play(&["-e", "hostkit_state=reverted"]);
    assert_eq!(recap(&out)["changed"], 2, "{out}");
    same_tree(&snapshot(&root), &image, "revert left a difference");
}

#[test]
fn ansible_fails_a_bad_argument_and_shows_the_documentation() {
    let (Some(playbook), Some(doc)) = (
        ansible_tool("ansible-playbook"),
        ansible_tool("ansible-doc"),
    ) else {
        return;
    };
    let ex = Example::new();
    let root = demo_root(&ex.dir);
    ex.dir.write(
        "ansible/bad.yml",
        format!(
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - hostkit:\n        recipe: gtk-legacy\n        root: {}\n        stat: applied\n",
            root.display()
        ),
    );
    let out = run(&mut ex.command(&playbook, &["-i", "inventory.ini", "bad.yml"]));
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("fatal: [localhost]: FAILED! => {\"changed\": false, \"msg\": \"Unsupported parameters for (hostkit) module: stat. Supported parameters include: force, recipe, root, scope, set, state, user, wait.\""),
        "{stdout}\n{stderr}"
    );
    assert_eq!(recap(&stdout)["failed"], 1, "{stdout}");
    // ansible-doc shows the sidecar: options, examples, return values.
    let out = run(&mut ex.command(&doc, &["-M", "library", "hostkit"]));
    let (text, stderr) = texts(&out);
    assert!(out.status.success(), "{text}\n{stderr}");
    for want in [
        "> MODULE hostkit (",
        "OPTIONS (= indicates it is required):",
        "= recipe",
        "choices: [applied, reverted, checked]",
        "EXAMPLES:",
        "RETURN VALUES:",
        "would_change",
    ] {
        assert!(text.contains(want), "want {want:?} in:\n{text}");
    }
    // And it documents exactly what the module takes and returns.
    let out = run(&mut ex.command(&doc, &["--json", "-M", "library", "hostkit"]));
    let docs: Value = parse(&texts(&out).0);
    let options: Vec<&String> = docs["hostkit"]["doc"]["options"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(options, hostkit::ansible::args::PARAMETERS, "{docs}");
    let returns = docs["hostkit"]["return"].as_object().unwrap();
    let mut keys = std::collections::BTreeSet::new();
    for extra in [
        json!({"state": "checked"}),
        json!({"_ansible_check_mode": true}),
    ] {
        let result = call(&ex.dir, &gtk_legacy(&root, extra));
        keys.extend(result.as_object().unwrap().keys().cloned());
    }
    for key in &keys {
        // `failed` and `warnings` are Ansible's own return values.
        if !["failed", "warnings"].contains(&key.as_str()) {
            assert!(
                returns.contains_key(key),
                "`{key}` is returned but not in library/hostkit.yml's RETURN"
            );
        }
    }
}

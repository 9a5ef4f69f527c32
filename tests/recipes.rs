//! `hostkit list/show/check/apply/revert`: every test runs the real binary against a temporary
//! root or a temporary home (never the real `/etc` or `$HOME`), with the real `gsettings`,
//! `dconf` and `dpkg-query`.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::{TestDir, hostkit, is_root, run, run_ok, texts};

/// What a tree looks like: every path with its type, mode, owner and contents.
pub(crate) fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("read_dir")
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            let rel = path.strip_prefix(root).expect("under root").to_path_buf();
            let head = format!("mode {:o} owner {}:{}", meta.mode(), meta.uid(), meta.gid());
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).expect("readlink");
                out.insert(rel, format!("{head} link {}", target.display()));
            } else if meta.is_dir() {
                out.insert(rel, format!("{head} dir"));
                walk(root, &path, out);
            } else {
                let bytes = std::fs::read(&path).unwrap_or_default();
                out.insert(
                    rel,
                    format!("{head} file {:?}", String::from_utf8_lossy(&bytes)),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Skips the test (saying so) unless private mount namespaces work (root with CAP_SYS_ADMIN).
macro_rules! require_mount_ns {
    () => {
        require_root!();
        let ok = Command::new("unshare")
            .args(["-m", "true"])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            $crate::util::skip("`unshare -m` does not work here (needs CAP_SYS_ADMIN)");
            return;
        }
    };
}

/// Asserts two snapshots are equal, showing only the paths that differ.
#[track_caller]
pub(crate) fn same_tree(
    now: &BTreeMap<PathBuf, String>,
    want: &BTreeMap<PathBuf, String>,
    what: &str,
) {
    let mut diffs = Vec::new();
    for key in now
        .keys()
        .chain(want.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (a, b) = (now.get(key), want.get(key));
        if a != b {
            let short = |v: Option<&String>| {
                v.map_or("(absent)".to_string(), |s| s.chars().take(300).collect())
            };
            diffs.push(format!(
                "{}:\n  now:  {}\n  want: {}",
                key.display(),
                short(a),
                short(b)
            ));
        }
    }
    assert!(diffs.is_empty(), "{what}:\n{}", diffs.join("\n"));
}

/// A `dpkg` database with these packages installed (for `dpkg-query --admindir`).
pub(crate) fn dpkg_status(dir: &TestDir, packages: &[(&str, &str)]) {
    let mut text = String::new();
    for (name, version) in packages {
        text.push_str(&format!(
            "Package: {name}\nStatus: install ok installed\nPriority: optional\nSection: libs\n\
             Installed-Size: 100\nMaintainer: Test <test@example.org>\nArchitecture: amd64\n\
             Version: {version}\nDescription: test fixture\n\n"
        ));
    }
    dir.write("var/lib/dpkg/status", text);
}

pub(crate) const DEBIAN_12: &[(&str, &str)] = &[
    ("libgtk-3-0", "3.24.38-2~deb12u3"),
    ("libqtgui4", "4:4.8.7+dfsg-18"),
    ("qt5-gtk-platformtheme", "5.15.8+dfsg-11+deb12u2"),
    ("qt6-gtk-platformtheme", "6.4.2+dfsg-10"),
];

/// `hostkit` with a given HOME and no XDG or GSettings variables from the outside.
pub(crate) fn hk(home: &Path) -> Command {
    let mut cmd = hostkit();
    clean_env(&mut cmd, home);
    cmd
}

/// A given HOME and no XDG, GSettings, sudo or fault-injection variables from the outside.
fn clean_env(cmd: &mut Command, home: &Path) {
    cmd.env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_STATE_HOME")
        .env_remove("GSETTINGS_BACKEND")
        .env_remove("GSETTINGS_SCHEMA_DIR")
        .env_remove("HOSTKIT_FAIL_AFTER_STEP")
        .env_remove("SUDO_USER")
        .env_remove("SUDO_UID")
        .env_remove("SUDO_GID")
        .env_remove("PKEXEC_UID");
}

/// `hostkit ARGS --root DIR` with HOME=/home/u (inside the root).
pub(crate) fn in_root(dir: &TestDir, args: &[&str]) -> Command {
    let mut cmd = hk(Path::new("/home/u"));
    cmd.args(args).arg("--root").arg(dir.path());
    cmd
}

pub(crate) fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// Asserts an exit code, showing the output when it differs.
pub(crate) fn expect(out: &Output, want: i32) -> (String, String) {
    let (stdout, stderr) = texts(out);
    assert_eq!(code(out), want, "stdout:\n{stdout}\nstderr:\n{stderr}");
    (stdout, stderr)
}

/// Runs `hostkit ARGS --root DIR` and asserts its exit code; returns stdout and stderr.
#[track_caller]
pub(crate) fn at(dir: &TestDir, args: &[&str], want: i32) -> (String, String) {
    expect(&run(&mut in_root(dir, args)), want)
}

/// Asserts that `text` contains `needle`, showing the text when it does not.
#[track_caller]
pub(crate) fn has(text: &str, needle: &str) {
    assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
}

/// The full cycle on a root: dry run shows `diff` and changes nothing; apply prints the same
/// and makes exactly the change; a second apply is a no-op; check is 0; revert restores the
/// tree byte for byte. Returns the tree as applied.
pub(crate) fn cycle(dir: &TestDir, args: &[&str], diff: &str) -> BTreeMap<PathBuf, String> {
    let before = snapshot(dir.path());
    let (dry, _) = at(dir, &[&["apply", "--dry-run"], args].concat(), 0);
    assert_eq!(dry, diff);
    same_tree(
        &snapshot(dir.path()),
        &before,
        "the dry run changed something",
    );
    let (check, _) = at(dir, &[&["check"], args].concat(), 1);
    has(&check, "would change");
    let (applied, _) = at(dir, &[&["apply"], args].concat(), 0);
    assert_eq!(applied, diff);
    let after = snapshot(dir.path());
    let (again, stderr) = at(dir, &[&["apply"], args].concat(), 0);
    assert_eq!(again, "");
    has(&stderr, "already applied");
    same_tree(
        &snapshot(dir.path()),
        &after,
        "the second apply changed something",
    );
    let (check, _) = at(dir, &[&["check"], args].concat(), 0);
    assert!(!check.contains("would change"), "{check}");
    let preview = revert_preview(dir, args);
    same_tree(
        &snapshot(dir.path()),
        &after,
        "revert's preview changed something",
    );
    let (reverted, _) = at(dir, &[&["revert", "--format", "json"], args].concat(), 0);
    let reverted: serde_json::Value = serde_json::from_str(&reverted).expect("JSON");
    assert_eq!(
        revert_listing(&preview),
        revert_listing(&reverted),
        "revert's preview does not list what revert did"
    );
    same_tree(
        &snapshot(dir.path()),
        &before,
        "revert did not restore the tree",
    );
    after
}

/// What a revert report (or its preview) lists, in order: each step's id, kind, reason, files,
/// commands (with whether each runs) and diff; not the status (`reverted` or `would change`)
/// nor the summary.
pub(crate) fn revert_listing(report: &serde_json::Value) -> Vec<serde_json::Value> {
    report["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no steps in {report}"))
        .iter()
        .map(|s| {
            serde_json::json!([
                s["id"],
                s["kind"],
                s["reason"],
                s["files"],
                s["commands"],
                s["diff"]
            ])
        })
        .collect()
}

/// The preview of `hostkit revert ARGS --root DIR` (HOME=/home/u): the report of the Ansible
/// module's check mode for `state: reverted`, the one caller of the preview. `ARGS` is a recipe
/// then `--scope S` and `--set K=V`.
pub(crate) fn revert_preview(dir: &TestDir, args: &[&str]) -> serde_json::Value {
    let mut module = serde_json::json!({
        "recipe": args[0],
        "state": "reverted",
        "root": dir.path(),
        "_ansible_check_mode": true,
    });
    let mut sets = serde_json::Map::new();
    for pair in args[1..].chunks(2) {
        match pair {
            ["--scope", scope] => module["scope"] = serde_json::json!(scope),
            ["--set", kv] => {
                let (k, v) = kv.split_once('=').expect("K=V");
                sets.insert(k.into(), serde_json::json!(v));
            }
            other => panic!("revert_preview: no module argument for {other:?}"),
        }
    }
    module["set"] = serde_json::Value::Object(sets);
    let scratch = TestDir::new();
    let file = scratch.write("args.json", serde_json::to_vec(&module).unwrap());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hostkit-ansible"));
    clean_env(&mut cmd, Path::new("/home/u"));
    cmd.env("RUST_BACKTRACE", "0").arg(&file);
    let (stdout, stderr) = expect(&run(&mut cmd), 0);
    let result: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(result["check_mode"], true, "{stdout}\n{stderr}");
    result
}

#[test]
fn gtk_legacy_user_scope_live_with_real_gsettings() {
    let dir = TestDir::new();
    // GTK's real FileChooser schema, compiled into a private schema directory.
    let schemas = dir.join("schemas");
    std::fs::create_dir_all(&schemas).unwrap();
    std::fs::copy(
        "/usr/share/glib-2.0/schemas/org.gtk.Settings.FileChooser.gschema.xml",
        schemas.join("org.gtk.Settings.FileChooser.gschema.xml"),
    )
    .expect("libgtk-3-common's FileChooser schema");
    run_ok(Command::new("glib-compile-schemas").arg(&schemas));
    let home = dir.join("home");
    // A home where gsettings (keyfile backend) has been used, and a CRLF ~/.bash_profile.
    // (gsettings' keyfile backend itself writes the file with mode 0600.)
    let keyfile = dir.write(
        "home/.config/glib-2.0/settings/keyfile",
        "[org/gtk/settings/file-chooser]\nshow-hidden=true\n",
    );
    std::fs::set_permissions(&keyfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    dir.write(
        "home/.bash_profile",
        "# login\r\n[ -f ~/.profile ] && . ~/.profile\r\n",
    );
    dir.write("home/.profile", "# not the login file here\n");
    let hk_live = |args: &[&str]| {
        let mut cmd = hk(&home);
        cmd.env("GSETTINGS_SCHEMA_DIR", &schemas)
            .env("GSETTINGS_BACKEND", "keyfile")
            .args(args)
            .args(["--set", "settings_ini=always"]);
        cmd
    };
    // The real gsettings, on the same private schemas and keyfile as hostkit's.
    let gsettings = |args: &[&str]| {
        run_ok(
            Command::new("gsettings")
                .env("HOME", &home)
                .env_remove("XDG_CONFIG_HOME")
                .env("GSETTINGS_SCHEMA_DIR", &schemas)
                .env("GSETTINGS_BACKEND", "keyfile")
                .args(args),
        )
    };
    let gsettings_get = || {
        gsettings(&[
            "get",
            "org.gtk.Settings.FileChooser",
            "sort-directories-first",
        ])
    };
    let h = home.display().to_string();
    let h = h.trim_start_matches('/');
    let diff = format!(
        "--- a/{h}/.bash_profile\n+++ b/{h}/.bash_profile\n@@ -1,2 +1,3 @@\n # login\r\n [ -f ~/.profile ] && . ~/.profile\r\n+export GTK_OVERLAY_SCROLLING=0\r\n\
         --- /dev/null\n+++ b/{h}/.config/gtk-3.0/settings.ini\n@@ -0,0 +1,2 @@\n+[Settings]\n+gtk-overlay-scrolling=false\n\
         $ gsettings set org.gtk.Settings.FileChooser sort-directories-first true\n"
    );
    let before = snapshot(dir.path());
    let (dry, _) = expect(&run(&mut hk_live(&["apply", "gtk-legacy", "--dry-run"])), 0);
    assert_eq!(dry, diff);
    same_tree(
        &snapshot(dir.path()),
        &before,
        "the dry run changed something",
    );
    assert_eq!(gsettings_get(), "false\n");

    let (applied, _) = expect(&run(&mut hk_live(&["apply", "gtk-legacy"])), 0);
    assert_eq!(applied, diff);
    assert_eq!(gsettings_get(), "true\n");
    assert_eq!(
        dir.read("home/.bash_profile"),
        "# login\r\n[ -f ~/.profile ] && . ~/.profile\r\nexport GTK_OVERLAY_SCROLLING=0\r\n"
    );
    assert_eq!(dir.read("home/.profile"), "# not the login file here\n");
    let (again, stderr) = expect(&run(&mut hk_live(&["apply", "gtk-legacy"])), 0);
    assert_eq!(again, "");
    has(&stderr, "already applied");
    let (check, _) = expect(&run(&mut hk_live(&["check", "gtk-legacy"])), 0);
    has(&check, "ok              sort-directories-first");
    has(&check, "manual          file-chooser-typeahead");
    has(&check, "lah7/gtk3-classic");

    let (reverted, _) = expect(&run(&mut hk_live(&["revert", "gtk-legacy"])), 0);
    has(
        &reverted,
        "$ gsettings reset org.gtk.Settings.FileChooser sort-directories-first",
    );
    assert_eq!(gsettings_get(), "false\n");
    same_tree(
        &snapshot(dir.path()),
        &before,
        "revert did not restore the home byte for byte",
    );

    // A value someone set back to what it was before apply is as before, like a file put back
    // by hand: revert leaves it alone and reverts the rest (a write that never took effect is
    // the same case). A value changed to anything else is refused without --force (a boolean
    // key has no third value; the refusal is tested with a fake host in the engine's tests).
    expect(&run(&mut hk_live(&["apply", "gtk-legacy"])), 0);
    gsettings(&[
        "set",
        "org.gtk.Settings.FileChooser",
        "sort-directories-first",
        "false",
    ]);
    let (out, _) = expect(&run(&mut hk_live(&["revert", "gtk-legacy"])), 0);
    assert!(
        !out.contains("gsettings reset org.gtk.Settings.FileChooser sort-directories-first"),
        "{out}"
    );
    assert_eq!(gsettings_get(), "false\n");
    assert_eq!(
        dir.read("home/.bash_profile"),
        "# login\r\n[ -f ~/.profile ] && . ~/.profile\r\n"
    );
}

#[test]
fn gtk_legacy_user_scope_under_root() {
    let dir = TestDir::new();
    dpkg_status(&dir, DEBIAN_12);
    dir.write("home/u/.profile", "# ~/.profile\nPATH=$HOME/bin:$PATH");
    let diff = "--- a/home/u/.profile\n+++ b/home/u/.profile\n@@ -1,2 +1,3 @@\n # ~/.profile\n-PATH=$HOME/bin:$PATH\n\\ No newline at end of file\n+PATH=$HOME/bin:$PATH\n+export GTK_OVERLAY_SCROLLING=0\n\
                --- /dev/null\n+++ b/home/u/.config/gtk-3.0/settings.ini\n@@ -0,0 +1,2 @@\n+[Settings]\n+gtk-overlay-scrolling=false\n";
    let applied = cycle(&dir, &["gtk-legacy"], diff);
    assert!(applied.contains_key(Path::new(
        "home/u/.local/state/hostkit/gtk-legacy/journal.json"
    )));
    let (check, _) = at(&dir, &["check", "gtk-legacy"], 1);
    assert!(
        check.contains("not applicable  sort-directories-first")
            && check.contains("live gsettings probe is not run under --root"),
        "{check}"
    );
}

#[test]
fn gtk_legacy_single_click_is_manual_only_before_gtk_3_24() {
    let dir = TestDir::new();
    dpkg_status(&dir, &[("libgtk-3-0", "3.22.30-1")]);
    let (check, _) = at(&dir, &["check", "gtk-legacy"], 1);
    has(&check, "manual          file-chooser-single-click");
    has(
        &check,
        "`hostkit patch apply gtk-single-click --source GTK_SOURCE_DIR`",
    );
    has(
        &check,
        "`hostkit patch apply gtk-typeahead --source GTK_SOURCE_DIR`",
    );
    dpkg_status(&dir, DEBIAN_12);
    let (check, _) = at(&dir, &["check", "gtk-legacy"], 1);
    has(&check, "not applicable  file-chooser-single-click");
    has(&check, "gtk3 3.24.38-2~deb12u3 is 3.24 or newer");
    has(&check, "manual          file-chooser-typeahead");
}

#[test]
fn gtk_legacy_settings_ini_needs_gtk_3_24_9() {
    let dir = TestDir::new();
    dpkg_status(&dir, &[("libgtk-3-0", "3.24.5-1")]);
    let (check, _) = at(&dir, &["check", "gtk-legacy"], 1);
    assert!(
        check.contains("not applicable  overlay-scrolling-ini")
            && check.contains(
                "gtk3 3.24.5-1 is older than 3.24.9 (--set settings_ini=always to apply anyway)"
            ),
        "{check}"
    );
}

#[test]
fn gtk_legacy_system_scope_under_root_with_real_dconf() {
    let dir = TestDir::new();
    dpkg_status(&dir, DEBIAN_12);
    // An existing profile without the system database, and an existing settings.ini.
    dir.write("etc/dconf/profile/user", "user-db:user\n");
    dir.write(
        "etc/gtk-3.0/settings.ini",
        "# site defaults\n[Settings]\ngtk-theme-name=Adwaita\n",
    );
    let root = dir.path().display().to_string();
    let diff = format!(
        "--- /dev/null\n+++ b/etc/profile.d/hostkit-gtk-legacy.sh\n@@ -0,0 +1,2 @@\n\
         +# Managed by hostkit (recipe gtk-legacy): classic, non-overlay scrollbars in GTK3.\n+export GTK_OVERLAY_SCROLLING=0\n\
         --- a/etc/gtk-3.0/settings.ini\n+++ b/etc/gtk-3.0/settings.ini\n@@ -1,3 +1,4 @@\n # site defaults\n [Settings]\n gtk-theme-name=Adwaita\n+gtk-overlay-scrolling=false\n\
         --- /dev/null\n+++ b/etc/dconf/db/local.d/50-hostkit-gtk-legacy-sort-directories-first\n@@ -0,0 +1,3 @@\n\
         +# Managed by hostkit (recipe gtk-legacy); `hostkit revert gtk-legacy` removes it.\n+[org/gtk/settings/file-chooser]\n+sort-directories-first=true\n\
         --- a/etc/dconf/profile/user\n+++ b/etc/dconf/profile/user\n@@ -1 +1,2 @@\n user-db:user\n+system-db:local\n\
         $ dconf compile {root}/etc/dconf/db/local {root}/etc/dconf/db/local.d\n"
    );
    let applied = cycle(&dir, &["gtk-legacy", "--scope", "system"], &diff);
    assert!(applied.contains_key(Path::new("etc/dconf/db/local")));
    assert!(applied.contains_key(Path::new("var/lib/hostkit/gtk-legacy/journal.json")));
    assert!(!applied.contains_key(Path::new("home")));

    // The compiled database really holds the key: apply again and read it with dconf.
    at(&dir, &["apply", "gtk-legacy", "--scope", "system"], 0);
    let profile = dir.write(
        "dconf-profile",
        format!("file-db:{root}/etc/dconf/db/local\n"),
    );
    let value = run_ok(Command::new("dconf").env("DCONF_PROFILE", &profile).args([
        "read",
        "/org/gtk/settings/file-chooser/sort-directories-first",
    ]));
    assert_eq!(value, "true\n");
    std::fs::remove_file(&profile).unwrap();
    at(&dir, &["revert", "gtk-legacy", "--scope", "system"], 0);
    assert!(!dir.join("etc/dconf/db/local").exists());
}

#[test]
fn qt_gtk_user_scope_under_root() {
    let dir = TestDir::new();
    dpkg_status(&dir, DEBIAN_12);
    dir.write(
        "home/u/.config/Trolltech.conf",
        "[General]\r\nfoo=1\r\n\r\n[Qt]\r\nstyle=Plastique\r\nfont=\"Sans,10\"\r\n",
    );
    let diff = "--- a/home/u/.config/Trolltech.conf\n+++ b/home/u/.config/Trolltech.conf\n@@ -2,5 +2,5 @@\n foo=1\r\n \r\n [Qt]\r\n-style=Plastique\r\n+style=GTK+\r\n font=\"Sans,10\"\r\n\
                --- /dev/null\n+++ b/home/u/.config/environment.d/60-hostkit-qt-gtk.conf\n@@ -0,0 +1,2 @@\n\
                +# Managed by hostkit (recipe qt-gtk): Qt5/Qt6 applications use the GTK3 platform theme.\n+QT_QPA_PLATFORMTHEME=gtk3\n\
                --- /dev/null\n+++ b/home/u/.xsessionrc\n@@ -0,0 +1 @@\n+export QT_QPA_PLATFORMTHEME=gtk3\n";
    // A private file of another owner keeps its mode and owner through the atomic rewrite.
    let conf = dir.join("home/u/.config/Trolltech.conf");
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600)).unwrap();
    let owner = if is_root() {
        1234
    } else {
        nix::unistd::geteuid().as_raw()
    };
    if is_root() {
        std::os::unix::fs::lchown(&conf, Some(owner), Some(owner)).unwrap();
    }
    let applied = cycle(&dir, &["qt-gtk"], diff);
    let entry = &applied[Path::new("home/u/.config/Trolltech.conf")];
    has(entry, &format!("mode 100600 owner {owner}:{owner} file"));
}

#[test]
fn qt_gtk_system_scope_under_root() {
    let dir = TestDir::new();
    dpkg_status(&dir, DEBIAN_12);
    dir.write(
        "etc/environment",
        "PATH=\"/usr/local/bin:/usr/bin\"\r\nQT_QPA_PLATFORMTHEME=qt5ct\r\n",
    );
    let diff = "--- /dev/null\n+++ b/etc/xdg/Trolltech.conf\n@@ -0,0 +1,2 @@\n+[Qt]\n+style=GTK+\n\
                --- a/etc/environment\n+++ b/etc/environment\n@@ -1,2 +1,2 @@\n PATH=\"/usr/local/bin:/usr/bin\"\r\n-QT_QPA_PLATFORMTHEME=qt5ct\r\n+QT_QPA_PLATFORMTHEME=xdgdesktopportal\r\n";
    cycle(
        &dir,
        &[
            "qt-gtk",
            "--scope",
            "system",
            "--set",
            "platformtheme=xdgdesktopportal",
        ],
        diff,
    );
}

#[test]
fn qt_gtk_missing_packages_are_reported_under_root() {
    let dir = TestDir::new();
    dpkg_status(&dir, &[("qt5-gtk-platformtheme", "5.15.8+dfsg-11")]);
    let before = snapshot(dir.path());
    let (dry, _) = at(
        &dir,
        &["apply", "qt-gtk", "--scope", "system", "--dry-run"],
        0,
    );
    assert_eq!(
        dry,
        "--- /dev/null\n+++ b/etc/environment\n@@ -0,0 +1 @@\n+QT_QPA_PLATFORMTHEME=gtk3\n\
         # not run under --root, run inside the image: apt-get install -y qt6-gtk-platformtheme\n"
    );
    same_tree(&snapshot(dir.path()), &before, "the tree changed");
    let (check, _) = at(&dir, &["check", "qt-gtk", "--scope", "system"], 1);
    assert!(
        check.contains("not applicable  qt4-style")
            && check.contains("qt4 is not installed (libqtgui4)"),
        "{check}"
    );
    // Apply writes the file but can only report the package manager call: exit 1.
    let (_, stderr) = at(&dir, &["apply", "qt-gtk", "--scope", "system"], 1);
    has(&stderr, "reported        platformtheme-packages");
    assert_eq!(dir.read("etc/environment"), "QT_QPA_PLATFORMTHEME=gtk3\n");
    // In user scope a missing package is manual (installing needs root).
    let (check, _) = at(&dir, &["check", "qt-gtk"], 1);
    has(&check, "manual          platformtheme-packages");
    has(
        &check,
        "as root run `apt-get install -y qt6-gtk-platformtheme`",
    );
}

#[test]
fn json_output_has_the_documented_shape() {
    let dir = TestDir::new();
    dpkg_status(&dir, DEBIAN_12);
    let (out, _) = at(
        &dir,
        &[
            "apply",
            "qt-gtk",
            "--scope",
            "system",
            "--dry-run",
            "--format",
            "json",
        ],
        0,
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["recipe"], "qt-gtk");
    assert_eq!(v["action"], "dry-run");
    assert_eq!(v["scope"], "system");
    assert_eq!(v["changed"], true);
    let steps = v["steps"].as_array().unwrap();
    let ids: Vec<&str> = steps.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        ["qt4-style", "platformtheme-packages", "platformtheme-env"]
    );
    assert_eq!(steps[0]["status"], "would change");
    assert_eq!(steps[0]["kind"], "ini");
    assert_eq!(steps[0]["files"][0], "etc/xdg/Trolltech.conf");
    assert_eq!(steps[1]["status"], "ok");
    assert!(
        v["diff"]
            .as_str()
            .unwrap()
            .starts_with("--- /dev/null\n+++ b/etc/xdg/Trolltech.conf\n")
    );
    for key in ["reason", "commands", "diff", "summary"] {
        assert!(steps[0].get(key).is_some(), "missing {key}");
    }
    let (out, _) = at(&dir, &["check", "all", "--format", "json"], 1);
    let all: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    // Every recipe `list` knows, in its order.
    let listed: serde_json::Value =
        serde_json::from_str(&run_ok(hk(dir.path()).args(["list", "--format", "json"]))).unwrap();
    let names = |v: &serde_json::Value, key: &str| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r[key].as_str().unwrap().to_string())
            .collect()
    };
    let names = (names(&all, "recipe"), names(&listed, "name"));
    assert_eq!(names.0, names.1);
    assert_eq!(names.0.len(), 6);
}

#[test]
fn diff_is_coloured_only_when_asked_or_on_a_terminal() {
    let dir = TestDir::new();
    dir.write("home/u/.profile", "# p\n");
    let args = [
        "apply",
        "gtk-legacy",
        "--dry-run",
        "--set",
        "settings_ini=never",
    ];
    let (plain, _) = at(&dir, &args, 0);
    assert!(!plain.contains('\x1b'), "{plain:?}");
    let (coloured, _) = at(&dir, &[&args[..], &["--color", "always"]].concat(), 0);
    has(
        &coloured,
        "\x1b[32m+export GTK_OVERLAY_SCROLLING=0\x1b[0m\n",
    );
}

#[test]
fn check_exit_codes_and_check_all() {
    let dir = TestDir::new();
    dpkg_status(&dir, DEBIAN_12);
    at(&dir, &["check", "all", "--scope", "system"], 1);
    at(&dir, &["apply", "gtk-legacy", "--scope", "system"], 0);
    at(&dir, &["apply", "qt-gtk", "--scope", "system"], 0);
    at(&dir, &["apply", "rtl8139"], 0);
    let (out, _) = at(&dir, &["check", "all", "--scope", "system"], 0);
    assert!(
        out.contains("gtk-legacy (system scope") && out.contains("qt-gtk (system scope"),
        "{out}"
    );
    let (_, err) = at(&dir, &["check", "nope"], 2);
    has(
        &err,
        "unknown recipe `nope`; available: gtk-legacy, ngroups, procps, qt-gtk, rtl8139, udisks2-media",
    );
    let (_, err) = at(&dir, &["check", "qt-gtk", "--set", "colour=red"], 2);
    has(
        &err,
        "unknown parameter `colour`; allowed: qt4, platformtheme",
    );
    let (_, err) = at(&dir, &["check", "qt-gtk", "--set", "platformtheme=kde"], 2);
    has(
        &err,
        "bad value `kde` for parameter `platformtheme`; allowed: gtk3, xdgdesktopportal",
    );
}

#[test]
fn list_and_show() {
    let dir = TestDir::new();
    let out = run_ok(hk(dir.path()).arg("list"));
    assert_eq!(
        out,
        "gtk-legacy     user,system  GTK3 as it used to behave: classic scrollbars, folders first in the file chooser\n\
         ngroups        system       Can a user be in more than 32 groups? Kernel and C library limits, largest membership, NFS AUTH_SYS\n\
         procps         system       Does ps show all groups of a process in hundreds of groups? procps version and a live check\n\
         qt-gtk         user,system  Qt applications look like the GTK desktop: Qt4 style GTK+, Qt5/Qt6 GTK3 platform theme\n\
         rtl8139        system       Realtek 8139 cards get 8139too, not 8139cp: a modprobe.d drop-in, checked against kmod\n\
         udisks2-media  system       Mount removable media under /media instead of /run/media/$USER (udisks2 udev rule)\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&run_ok(hk(dir.path()).args(["list", "--format", "json"]))).unwrap();
    assert_eq!(json[3]["name"], "qt-gtk");
    assert_eq!(json[3]["scopes"], serde_json::json!(["user", "system"]));
    let json: serde_json::Value = serde_json::from_str(&run_ok(
        hk(dir.path()).args(["show", "qt-gtk", "--format", "json"]),
    ))
    .unwrap();
    assert_eq!(json["params"][0]["name"], "qt4");
    assert_eq!(json["steps"][0]["kind"], "ini");
    let out = run_ok(hk(dir.path()).args(["show", "gtk-legacy"]));
    has(
        &out,
        "file-chooser-typeahead [manual, user+system] (manual)",
    );
    has(&out, "what to do: no setting exists");
    has(&out, "settings_ini=auto [auto|always|never]");
}

/// A recipe directory with one file.
fn recipes_dir(dir: &TestDir, name: &str, text: &str) -> PathBuf {
    dir.write(format!("recipes/{name}"), text);
    dir.join("recipes")
}

#[test]
fn malformed_recipes_name_file_line_and_column() {
    let dir = TestDir::new();
    let cases = [
        (
            "summary = \"x\"\nscopes = [\"user\"]\n[[steps]]\nid = \"a\"\nkind = line\n",
            "bad.toml:5:8: invalid TOML",
        ),
        (
            "summary = \"x\"\nscopes = [\"user\"]\n[[steps]]\nid = \"a\"\nkind = \"symlink\"\n",
            "bad.toml:5:8: steps[0]: `kind`: unknown step kind `symlink`; allowed: line, ini, file, gsettings, package, manual, probe",
        ),
        (
            "summary = \"x\"\nscopes = [\"user\"]\n[[steps]]\nid = \"a\"\nkind = \"line\"\npath = \"/x\"\nline = \"y\"\ncolour = 1\n",
            "bad.toml:8:1: step `a`: unknown key `colour`; allowed: id, kind, summary, why, reaches, scope, when, path, line, match, state, mode",
        ),
        (
            "summary = \"x\"\nscopes = [\"user\", \"galaxy\"]\n",
            "bad.toml:2:10: recipe: `scopes`: unknown scope `galaxy`; allowed: user, system",
        ),
    ];
    for (text, want) in cases {
        let recipes = recipes_dir(&dir, "bad.toml", text);
        let out = run(hk(dir.path()).arg("list").arg("--recipes").arg(&recipes));
        let (_, err) = expect(&out, 2);
        let want = format!("{}/{want}", recipes.display());
        assert!(err.contains(&want), "want {want}\ngot {err}");
    }
}

#[test]
fn extra_recipes_load_from_a_directory() {
    let dir = TestDir::new();
    let recipes = recipes_dir(
        &dir,
        "motd.toml",
        "summary = \"a message of the day\"\nscopes = [\"system\"]\n[[steps]]\nid = \"motd\"\nkind = \"file\"\npath = \"/etc/motd\"\ncontent = \"hello {{world}}\\n\"\n",
    );
    let mut cmd = in_root(&dir, &["apply", "motd"]);
    cmd.arg("--recipes").arg(&recipes);
    let (out, _) = expect(&run(&mut cmd), 0);
    assert_eq!(
        out,
        "--- /dev/null\n+++ b/etc/motd\n@@ -0,0 +1 @@\n+hello {world}\n"
    );
    assert_eq!(
        std::fs::metadata(dir.join("etc/motd"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o644
    );
}

#[test]
fn target_that_is_a_directory_is_an_error() {
    let dir = TestDir::new();
    dpkg_status(&dir, DEBIAN_12);
    std::fs::create_dir_all(dir.join("etc/environment")).unwrap();
    let before = snapshot(dir.path());
    let (_, err) = at(&dir, &["apply", "qt-gtk", "--scope", "system"], 2);
    assert!(
        err.contains("step `platformtheme-env` (<built-in>/qt-gtk.toml:")
            && err.contains("/etc/environment: is a directory, expected a regular file"),
        "{err}"
    );
    same_tree(&snapshot(dir.path()), &before, "the tree changed");
}

#[test]
fn unreadable_target_is_an_error() {
    let dir = TestDir::new();
    let target = dir.write("home/u/.profile", "secret\n");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut cmd = in_root(&dir, &["apply", "gtk-legacy"]);
    if is_root() {
        // Root reads anything: run hostkit as an unprivileged user who owns the home instead
        // (from a copy of the binary, in case the build directory is private to root).
        use std::os::unix::process::CommandExt;
        let nobody = 65534;
        let bin = dir.join("bin/hostkit");
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::copy(crate::util::hostkit_bin(), &bin).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for p in ["home", "home/u", "home/u/.profile"] {
            std::os::unix::fs::lchown(dir.join(p), Some(nobody), Some(nobody)).unwrap();
        }
        let mut as_nobody = Command::new(&bin);
        as_nobody
            .env_clear()
            .env("HOME", "/home/u")
            .args(["apply", "gtk-legacy", "--root"])
            .arg(dir.path())
            .uid(nobody)
            .gid(nobody);
        cmd = as_nobody;
    }
    let before = snapshot(dir.path());
    let (_, err) = expect(&run(&mut cmd), 2);
    has(&err, "/home/u/.profile: Permission denied");
    same_tree(&snapshot(dir.path()), &before, "the tree changed");
}

#[test]
fn symlink_planted_by_another_user_is_not_followed() {
    require_root!();
    let dir = TestDir::new();
    let victim = dir.write("etc/shadow-like", "root:x:0\n");
    std::fs::create_dir_all(dir.join("home/u")).unwrap();
    let link = dir.join("home/u/.profile");
    std::os::unix::fs::symlink("/etc/shadow-like", &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(4242), Some(4242)).unwrap();
    let before = snapshot(dir.path());
    let (_, err) = at(&dir, &["apply", "gtk-legacy"], 2);
    has(
        &err,
        "home/u/.profile: refusing to follow a symbolic link owned by uid 4242 to ",
    );
    same_tree(&snapshot(dir.path()), &before, "the tree changed");
    assert_eq!(std::fs::read_to_string(victim).unwrap(), "root:x:0\n");

    // The same for a directory on the way: ~/.config planted by uid 4242.
    std::os::unix::fs::symlink("/etc", dir.join("home/u/.config")).unwrap();
    std::os::unix::fs::lchown(dir.join("home/u/.config"), Some(4242), Some(4242)).unwrap();
    let (_, err) = at(&dir, &["apply", "qt-gtk", "--set", "qt4=always"], 2);
    has(
        &err,
        "home/u/.config: refusing to follow a symbolic link owned by uid 4242",
    );
    assert!(!dir.join("etc/Trolltech.conf").exists());
}

#[test]
fn symlink_owned_by_the_user_is_followed_inside_the_root() {
    let dir = TestDir::new();
    dir.write("home/u/dotfiles/profile", "# mine\n");
    std::os::unix::fs::symlink("/home/u/dotfiles/profile", dir.join("home/u/.profile")).unwrap();
    let (out, _) = at(
        &dir,
        &["apply", "gtk-legacy", "--set", "settings_ini=never"],
        0,
    );
    assert!(
        out.starts_with("--- a/home/u/dotfiles/profile\n+++ b/home/u/dotfiles/profile\n"),
        "{out}"
    );
    assert_eq!(
        dir.read("home/u/dotfiles/profile"),
        "# mine\nexport GTK_OVERLAY_SCROLLING=0\n"
    );
    assert!(
        std::fs::symlink_metadata(dir.join("home/u/.profile"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    at(&dir, &["revert", "gtk-legacy"], 0);
    assert_eq!(dir.read("home/u/dotfiles/profile"), "# mine\n");
}

#[test]
fn read_only_root_fails_cleanly() {
    require_mount_ns!();
    let dir = TestDir::new();
    dpkg_status(&dir, DEBIAN_12);
    let before = snapshot(dir.path());
    // A read-only bind mount of the root in a private mount namespace.
    let out = run(Command::new("unshare")
        .args(["-m", "sh", "-c", r#"mount --bind -o ro "$1" "$1" && HOME=/home/u exec "$2" apply gtk-legacy --scope system --root "$1""#, "sh"])
        .arg(dir.path())
        .arg(crate::util::hostkit_bin()));
    let (_, err) = expect(&out, 2);
    has(&err, "Read-only file system");
    same_tree(&snapshot(dir.path()), &before, "the tree changed");
}

#[test]
fn system_scope_on_a_live_system_runs_dconf_update() {
    require_mount_ns!();
    // The live system, as seen from a private mount namespace whose /etc and /var/lib are fresh
    // tmpfs mounts: hostkit writes the real paths and runs the real `dconf update`, and nothing
    // reaches the host's /etc (`set -e`: nothing runs unless the mounts succeeded). Revert puts
    // every file back, the compiled database included, byte for byte.
    let dir = TestDir::new();
    let profile = dir.write("profile", "file-db:/etc/dconf/db/local\n");
    let script = r#"
        set -e
        mount -t tmpfs tmpfs /etc
        mount -t tmpfs tmpfs /var/lib
        # A site that already has a system dconf database.
        mkdir -p /etc/dconf/db/local.d /etc/dconf/profile
        printf "[org/gnome/desktop/interface]\nclock-format='12h'\n" > /etc/dconf/db/local.d/00-site
        printf 'user-db:user\nsystem-db:local\n' > /etc/dconf/profile/user
        dconf update
        tree() { find /etc /var/lib -type f -exec sha256sum {} + | sort -k2; }
        tree > "$TMPDIR/before"
        read_key() { DCONF_PROFILE="$PROFILE" dconf read "$1"; }
        hk() { HOME=/root "$HK" "$@" --scope system --set settings_ini=always; }
        hk apply gtk-legacy | grep '^\$'
        hk check gtk-legacy >/dev/null && echo "check: 0"
        echo "applied: $(read_key /org/gtk/settings/file-chooser/sort-directories-first)"
        hk revert gtk-legacy | grep '^\$'
        echo "reverted: [$(read_key /org/gtk/settings/file-chooser/sort-directories-first)] $(read_key /org/gnome/desktop/interface/clock-format)"
        tree | diff "$TMPDIR/before" - && echo "identical"
    "#;
    let tmp = TestDir::new();
    let out = run(Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script])
        .env("HK", crate::util::hostkit_bin())
        .env("PROFILE", &profile)
        .env("TMPDIR", tmp.path()));
    let (stdout, stderr) = expect(&out, 0);
    assert_eq!(
        stdout,
        "$ dconf update\ncheck: 0\napplied: true\n$ dconf update\nreverted: [] '12h'\nidentical\n",
        "stderr:\n{stderr}"
    );
}

#[test]
fn failure_between_steps_leaves_files_intact_and_revert_works() {
    let dir = TestDir::new();
    dpkg_status(&dir, DEBIAN_12);
    dir.write(
        "etc/gtk-3.0/settings.ini",
        "[Settings]\ngtk-theme-name=Adwaita\n",
    );
    let before = snapshot(dir.path());
    let mut cmd = in_root(&dir, &["apply", "gtk-legacy", "--scope", "system"]);
    cmd.env("HOSTKIT_FAIL_AFTER_STEP", "1");
    let (out, err) = expect(&run(&mut cmd), 2);
    assert!(
        out.ends_with("+export GTK_OVERLAY_SCROLLING=0\n"),
        "only the done step's diff: {out}"
    );
    has(&err, "changed         overlay-scrolling-env");
    has(&err, "failed          overlay-scrolling-ini");
    has(&err, "not done        sort-directories-first");
    has(
        &err,
        "error: step `overlay-scrolling-ini` failed; steps done before it: overlay-scrolling-env; undo them with `hostkit revert gtk-legacy`",
    );
    // Each file is either as it was or as intended.
    assert!(dir.join("etc/profile.d/hostkit-gtk-legacy.sh").exists());
    assert_eq!(
        dir.read("etc/gtk-3.0/settings.ini"),
        "[Settings]\ngtk-theme-name=Adwaita\n"
    );
    assert!(!dir.join("etc/dconf").exists());
    let (_, err) = at(&dir, &["revert", "gtk-legacy", "--scope", "system"], 0);
    has(&err, "reverted: overlay-scrolling-env");
    same_tree(&snapshot(dir.path()), &before, "the tree changed");
}

#[test]
fn revert_refuses_to_overwrite_a_file_changed_since() {
    let dir = TestDir::new();
    dir.write("home/u/.profile", "# profile\n");
    at(
        &dir,
        &["apply", "gtk-legacy", "--set", "settings_ini=never"],
        0,
    );
    dir.write(
        "home/u/.profile",
        "# profile\nexport GTK_OVERLAY_SCROLLING=0\nalias ll='ls -l'\n",
    );
    let (_, err) = at(&dir, &["revert", "gtk-legacy"], 2);
    has(
        &err,
        "home/u/.profile: changed by someone else since `hostkit apply gtk-legacy`; not overwriting it (use --force to revert anyway)",
    );
    assert_eq!(
        dir.read("home/u/.profile"),
        "# profile\nexport GTK_OVERLAY_SCROLLING=0\nalias ll='ls -l'\n"
    );
    at(&dir, &["revert", "gtk-legacy", "--force"], 0);
    assert_eq!(dir.read("home/u/.profile"), "# profile\n");
    let (_, err) = at(&dir, &["revert", "gtk-legacy"], 0);
    has(&err, "nothing to revert: gtk-legacy has not been applied");
}

#[test]
fn two_recipes_applied_and_reverted_leave_no_state_behind() {
    let dir = TestDir::new();
    dpkg_status(&dir, DEBIAN_12);
    dir.write("home/u/.profile", "# profile\n");
    let before = snapshot(dir.path());
    at(&dir, &["apply", "gtk-legacy"], 0);
    at(&dir, &["apply", "qt-gtk"], 0);
    at(&dir, &["revert", "gtk-legacy"], 0);
    assert!(
        dir.join("home/u/.local/state/hostkit/qt-gtk/journal.json")
            .exists()
    );
    at(&dir, &["revert", "qt-gtk"], 0);
    same_tree(&snapshot(dir.path()), &before, "state or files left behind");
}

#[test]
fn a_corrupt_journal_is_an_error_naming_it() {
    let dir = TestDir::new();
    dir.write("home/u/.profile", "# profile\n");
    at(&dir, &["apply", "gtk-legacy"], 0);
    let journal = dir.write(
        "home/u/.local/state/hostkit/gtk-legacy/journal.json",
        "{ not json",
    );
    let (_, err) = at(&dir, &["revert", "gtk-legacy"], 2);
    has(&err, &format!("{}: bad journal: ", journal.display()));
    assert_eq!(
        dir.read("home/u/.profile"),
        "# profile\nexport GTK_OVERLAY_SCROLLING=0\n"
    );
}

#[test]
fn a_held_lock_stops_a_second_apply() {
    let dir = TestDir::new();
    dir.write("home/u/.profile", "# profile\n");
    let lock = dir.write("home/u/.local/state/hostkit/lock", "");
    let file = std::fs::File::open(&lock).unwrap();
    let _held =
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).expect("flock");
    let (_, err) = at(&dir, &["apply", "gtk-legacy"], 2);
    has(
        &err,
        "lock: locked by another process (another hostkit apply or revert); try again when it has finished, or use --wait",
    );
    assert_eq!(dir.read("home/u/.profile"), "# profile\n");
}

#[test]
fn unsupported_scope_and_missing_root_are_errors() {
    let dir = TestDir::new();
    let recipes = recipes_dir(&dir, "sys.toml", "summary = \"s\"\nscopes = [\"system\"]\n");
    let mut cmd = in_root(&dir, &["check", "sys", "--scope", "user"]);
    cmd.arg("--recipes").arg(&recipes);
    let (_, err) = expect(&run(&mut cmd), 2);
    has(
        &err,
        "recipe sys does not support scope `user`; supported: system",
    );
    let (_, err) = expect(
        &run(hk(dir.path())
            .args(["check", "gtk-legacy", "--root"])
            .arg(dir.join("nope"))),
        2,
    );
    has(&err, "nope: No such file or directory");
}

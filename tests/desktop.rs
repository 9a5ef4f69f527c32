//! Desktop settings that really change, for the right user: the real `gsettings`, dconf
//! (`dconf-service` activated on a real `dbus-daemon`), Debian's real `/etc/X11/Xsession` and a
//! real `bash -l`, observed from outside with a fresh `dbus-run-session gsettings get` on the
//! same HOME. Every home is a temporary directory; the live `sudo` test creates its user with
//! `useradd` inside a private mount namespace, on a copy of `/etc`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::recipes::{DEBIAN_12, at, dpkg_status, expect, has, hk, in_root, same_tree, snapshot};
use crate::util::{TestDir, run_ok, run_with_timeout, skip, texts};

const SCHEMA: &str = "org.gtk.Settings.FileChooser";
const KEY: &str = "sort-directories-first";

/// True when every tool is installed; otherwise skipped (failed under CI), naming them.
fn tools(names: &[&str]) -> bool {
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {n} >/dev/null")])
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    let schema = Path::new("/usr/share/glib-2.0/schemas/org.gtk.Settings.FileChooser.gschema.xml");
    if !missing.is_empty() {
        skip(&format!("needs {} (bash .ci/deps)", missing.join(", ")));
        return false;
    }
    if !schema.exists() {
        skip("needs GTK's FileChooser schema (libgtk-3-common; bash .ci/deps)");
        return false;
    }
    true
}

/// A fresh home and an empty runtime directory: what ssh without a user bus, `sudo -u` or
/// cron give (no DBUS_SESSION_BUS_ADDRESS, nothing listening in XDG_RUNTIME_DIR).
struct Desk {
    dir: TestDir,
    home: PathBuf,
    runtime: PathBuf,
}

fn desk() -> Desk {
    let dir = TestDir::new();
    let home = dir.join("home");
    let runtime = dir.join("run");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    Desk { dir, home, runtime }
}

/// `hostkit ARGS` on the desk's home, with no session bus and no display.
fn hk_nobus(d: &Desk, args: &[&str]) -> Command {
    let mut cmd = hk(&d.home);
    cmd.env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("DCONF_PROFILE")
        .env("XDG_RUNTIME_DIR", &d.runtime)
        .args(args);
    cmd
}

/// What the next desktop session of `home` reads: a fresh `dbus-run-session gsettings get`
/// with the same HOME (its own runtime directory), run as `uid` when given.
fn session_get(home: &Path, uid: Option<u32>) -> String {
    let runtime = TestDir::new();
    std::fs::set_permissions(runtime.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut cmd = Command::new("env");
    if let Some(uid) = uid {
        std::os::unix::fs::chown(runtime.path(), Some(uid), Some(uid)).unwrap();
        cmd = Command::new("setpriv");
        cmd.args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "env",
        ]);
    }
    cmd.arg("-i")
        .arg(format!("HOME={}", home.display()))
        .arg(format!("XDG_RUNTIME_DIR={}", runtime.path().display()))
        .arg("PATH=/usr/local/bin:/usr/bin:/bin")
        .args(["dbus-run-session", "--", "gsettings", "get", SCHEMA, KEY]);
    let out = run_with_timeout(&mut cmd, 60);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{cmd:?}: {stderr}");
    stdout.trim().to_string()
}

/// `gsettings ARGS` through a private bus on `home` (as the session of that home would).
fn session_set(home: &Path, args: &[&str]) {
    let runtime = TestDir::new();
    std::fs::set_permissions(runtime.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = run_with_timeout(
        Command::new("env")
            .arg("-i")
            .arg(format!("HOME={}", home.display()))
            .arg(format!("XDG_RUNTIME_DIR={}", runtime.path().display()))
            .arg("PATH=/usr/local/bin:/usr/bin:/bin")
            .args(["dbus-run-session", "--", "gsettings"])
            .args(args),
        60,
    );
    assert!(out.status.success(), "{}", texts(&out).1);
}

#[test]
fn gsettings_without_a_session_bus_is_really_written_and_reverted() {
    if !tools(&["gsettings", "dbus-run-session", "dconf"]) {
        return;
    }
    let d = desk();
    let before = snapshot(&d.home);
    assert_eq!(session_get(&d.home, None), "false");
    let args = ["--set", "settings_ini=never"];
    // cron: not even XDG_RUNTIME_DIR. Reading must not leave ~/.cache/dconf behind (glib's
    // fallback for dconf's runtime files).
    let (check, _) = expect(
        &run_with_timeout(
            hk_nobus(&d, &[&["check", "gtk-legacy"], &args[..]].concat())
                .env_remove("XDG_RUNTIME_DIR"),
            60,
        ),
        1,
    );
    has(&check, "would change    sort-directories-first");
    same_tree(&snapshot(&d.home), &before, "check changed the home");
    let out = run_with_timeout(
        &mut hk_nobus(&d, &[&["apply", "gtk-legacy"], &args[..]].concat()),
        120,
    );
    let (stdout, stderr) = expect(&out, 0);
    has(
        &stdout,
        "$ gsettings set org.gtk.Settings.FileChooser sort-directories-first true",
    );
    has(&stderr, "no session bus is reachable for the current user");
    has(&stderr, "private bus (dbus-run-session)");
    // The next session reads the new value: the change really happened.
    assert_eq!(session_get(&d.home, None), "true");
    let (check, _) = expect(
        &run_with_timeout(
            &mut hk_nobus(&d, &[&["check", "gtk-legacy"], &args[..]].concat()),
            60,
        ),
        0,
    );
    has(&check, "ok              sort-directories-first");
    let (reverted, _) = expect(
        &run_with_timeout(
            &mut hk_nobus(&d, &[&["revert", "gtk-legacy"], &args[..]].concat()),
            120,
        ),
        0,
    );
    has(
        &reverted,
        "$ gsettings reset org.gtk.Settings.FileChooser sort-directories-first",
    );
    assert_eq!(session_get(&d.home, None), "false");
    // Nothing of apply's write is left: no ~/.config/dconf, no ~/.cache/dconf.
    same_tree(
        &snapshot(&d.home),
        &before,
        "revert did not restore the home byte for byte",
    );
    // The runtime directory is the session's: hostkit leaves no bus running in it.
    assert!(!d.runtime.join("bus").exists());
    drop(d.dir);
}

#[test]
fn fresh_home_with_a_session_bus_apply_and_revert_leave_it_byte_exact() {
    if !tools(&["gsettings", "dbus-run-session", "dconf"]) {
        return;
    }
    let d = desk();
    let before = snapshot(&d.home);
    // A real session bus for each command (dconf-service activated on it).
    let in_session = |args: &[&str]| {
        let mut cmd = Command::new("dbus-run-session");
        let inner = hk_nobus(&d, args);
        cmd.arg("--")
            .arg(inner.get_program())
            .args(inner.get_args());
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        // A session has its runtime directory (pam_systemd); its bus and dconf-service too.
        cmd.env("XDG_RUNTIME_DIR", &d.runtime);
        run_with_timeout(&mut cmd, 120)
    };
    let args = ["--set", "settings_ini=never"];
    let (_, stderr) = expect(
        &in_session(&[&["apply", "gtk-legacy"], &args[..]].concat()),
        0,
    );
    has(&stderr, "session bus");
    assert_eq!(session_get(&d.home, None), "true");
    assert!(d.home.join(".config/dconf/user").is_file());
    let (_, stderr) = expect(
        &in_session(&[&["revert", "gtk-legacy"], &args[..]].concat()),
        0,
    );
    has(&stderr, "removed");
    assert_eq!(session_get(&d.home, None), "false");
    same_tree(
        &snapshot(&d.home),
        &before,
        "revert left apply's side effects in the home",
    );
}

#[test]
fn a_recipe_with_two_keys_reverts_to_a_byte_exact_home() {
    // The database apply's writes created is judged once every key is reset, not after the
    // first reset (when it still holds the second key).
    if !tools(&["gsettings", "dbus-run-session", "dconf"]) {
        return;
    }
    let d = desk();
    let recipes = TestDir::new();
    recipes.write(
        "two-keys.toml",
        format!(
            "summary = \"two keys\"\ndescription = \"two gsettings keys\"\nscopes = [\"user\"]\n\
             [[steps]]\nid = \"first\"\nkind = \"gsettings\"\nschema = \"{SCHEMA}\"\nkey = \"sort-directories-first\"\nvalue = \"true\"\ndconf_path = \"/org/gtk/settings/file-chooser/\"\n\
             [[steps]]\nid = \"second\"\nkind = \"gsettings\"\nschema = \"{SCHEMA}\"\nkey = \"show-hidden\"\nvalue = \"true\"\ndconf_path = \"/org/gtk/settings/file-chooser/\"\n"
        ),
    );
    let dir = recipes.path().to_str().unwrap().to_string();
    let before = snapshot(&d.home);
    for verb in ["apply", "revert"] {
        expect(
            &run_with_timeout(
                &mut hk_nobus(&d, &[verb, "two-keys", "--recipes", &dir]),
                120,
            ),
            0,
        );
        if verb == "apply" {
            assert!(d.home.join(".config/dconf/user").is_file());
        }
    }
    same_tree(
        &snapshot(&d.home),
        &before,
        "revert left the database apply's writes created",
    );
}

#[test]
fn a_dconf_database_the_user_had_is_never_removed() {
    if !tools(&["gsettings", "dbus-run-session", "dconf"]) {
        return;
    }
    let d = desk();
    let args = ["--set", "settings_ini=never"];
    // The user's own database, with another key set.
    session_set(&d.home, &["set", SCHEMA, "show-hidden", "true"]);
    let before = snapshot(&d.home);
    expect(
        &run_with_timeout(
            &mut hk_nobus(&d, &[&["apply", "gtk-legacy"], &args[..]].concat()),
            120,
        ),
        0,
    );
    assert_eq!(session_get(&d.home, None), "true");
    expect(
        &run_with_timeout(
            &mut hk_nobus(&d, &[&["revert", "gtk-legacy"], &args[..]].concat()),
            120,
        ),
        0,
    );
    assert_eq!(session_get(&d.home, None), "false");
    same_tree(
        &snapshot(&d.home),
        &before,
        "revert changed the user's database",
    );

    // An empty database the user had (every key reset) stays too.
    session_set(&d.home, &["reset", SCHEMA, "show-hidden"]);
    let before = snapshot(&d.home);
    assert!(d.home.join(".config/dconf/user").is_file());
    expect(
        &run_with_timeout(
            &mut hk_nobus(&d, &[&["apply", "gtk-legacy"], &args[..]].concat()),
            120,
        ),
        0,
    );
    expect(
        &run_with_timeout(
            &mut hk_nobus(&d, &[&["revert", "gtk-legacy"], &args[..]].concat()),
            120,
        ),
        0,
    );
    same_tree(
        &snapshot(&d.home),
        &before,
        "revert removed or changed the user's empty database",
    );
}

/// The attack: root runs hostkit on a home another uid owns (no sudo, HOME points there),
/// and that uid has no account. gsettings must never run as root there (dconf-service would
/// create root-owned files in the home), and dbus-daemon cannot run for a uid without an
/// account: refused before any change, exit 2, saying why.
#[test]
fn gsettings_for_a_home_of_a_uid_without_an_account_is_refused_before_any_change() {
    require_root!();
    if !tools(&["gsettings", "dbus-run-session", "dconf", "setpriv"]) {
        return;
    }
    let uid = 54321;
    let d = desk();
    std::os::unix::fs::chown(&d.home, Some(uid), Some(uid)).unwrap();
    let before = snapshot(&d.home);
    let args = ["--set", "settings_ini=never"];
    for action in ["check", "apply"] {
        let out = run_with_timeout(
            &mut hk_nobus(&d, &[&[action, "gtk-legacy"], &args[..]].concat()),
            120,
        );
        let (_, stderr) = expect(&out, 2);
        has(
            &stderr,
            "belongs to uid 54321, which has no account in the passwd database",
        );
    }
    same_tree(
        &snapshot(&d.home),
        &before,
        "a refused run changed the home",
    );
    // Without the gsettings step, the rest of the recipe still applies, as that uid's files.
    let out = run_with_timeout(
        hk(&d.home)
            .args(["apply", "qt-gtk", "--set", "qt4=never"])
            .env("XDG_RUNTIME_DIR", &d.runtime),
        120,
    );
    expect(&out, 0);
    let meta = std::fs::metadata(d.home.join(".xsessionrc")).unwrap();
    assert_eq!(meta.uid(), uid);
    expect(
        &run_with_timeout(
            hk(&d.home).args(["revert", "qt-gtk", "--set", "qt4=never"]),
            120,
        ),
        0,
    );
    same_tree(
        &snapshot(&d.home),
        &before,
        "revert did not restore the home",
    );
}

/// Debian's real Xsession (what display managers and startx run) with a probe as the session
/// program: what environment does the session get from this home?
fn xsession_env(home: &Path, var: &str) -> String {
    let dir = TestDir::new();
    let out_file = dir.join("out");
    let probe = dir.write(
        "probe",
        format!(
            "#!/bin/sh\nprintf '%s' \"${var}\" > {}\n",
            out_file.display()
        ),
    );
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run_with_timeout(
        Command::new("env")
            .arg("-i")
            .arg(format!("HOME={}", home.display()))
            .args([
                "PATH=/usr/bin:/bin",
                "USER=root",
                "LOGNAME=root",
                "/etc/X11/Xsession",
            ])
            .arg(&probe),
        60,
    );
    assert!(out.status.success(), "Xsession: {}", texts(&out).1);
    std::fs::read_to_string(&out_file).expect("the Xsession ran the probe")
}

#[test]
fn qt_gtk_reaches_x_sessions_started_through_xsession() {
    if !Path::new("/etc/X11/Xsession").exists() {
        skip("needs Debian's /etc/X11/Xsession (x11-common; bash .ci/deps)");
        return;
    }
    let dir = TestDir::new();
    dpkg_status(&dir, DEBIAN_12);
    let home = dir.join("home/u");
    std::fs::create_dir_all(&home).unwrap();
    assert_eq!(xsession_env(&home, "QT_QPA_PLATFORMTHEME"), "");
    at(&dir, &["apply", "qt-gtk"], 0);
    assert_eq!(xsession_env(&home, "QT_QPA_PLATFORMTHEME"), "gtk3");
    // The systemd user manager's file is there too.
    has(
        &std::fs::read_to_string(home.join(".config/environment.d/60-hostkit-qt-gtk.conf"))
            .unwrap(),
        "QT_QPA_PLATFORMTHEME=gtk3",
    );
    at(&dir, &["revert", "qt-gtk"], 0);
    assert_eq!(xsession_env(&home, "QT_QPA_PLATFORMTHEME"), "");

    // `show` says which sessions each file reaches.
    let (show, _) = expect(&crate::util::run(hk(&home).args(["show", "qt-gtk"])), 0);
    has(&show, "platformtheme-xsession [line, user]");
    has(
        &show,
        "reaches: X sessions started through Debian's /etc/X11/Xsession",
    );
    has(
        &show,
        "reaches: the systemd user manager (environment.d(5))",
    );
    has(&show, "not X sessions started through Xsession");
}

#[test]
fn gtk_legacy_reaches_a_real_login_shell() {
    if !tools(&["bash"]) {
        return;
    }
    let dir = TestDir::new();
    dpkg_status(&dir, DEBIAN_12);
    let home = dir.join("home/u");
    std::fs::create_dir_all(&home).unwrap();
    let login = || {
        run_ok(
            Command::new("env")
                .arg("-i")
                .arg(format!("HOME={}", home.display()))
                .args([
                    "PATH=/usr/bin:/bin",
                    "bash",
                    "-l",
                    "-c",
                    "printf %s \"$GTK_OVERLAY_SCROLLING\"",
                ]),
        )
    };
    assert_eq!(login(), "");
    at(&dir, &["apply", "gtk-legacy"], 0);
    assert_eq!(login(), "0");
    at(&dir, &["revert", "gtk-legacy"], 0);
    assert_eq!(login(), "");
}

/// An image with `alice` (uid 4242) whose home she owns, and root's home.
fn image_with_alice() -> TestDir {
    let dir = TestDir::new();
    dpkg_status(&dir, DEBIAN_12);
    dir.write(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\nalice:x:4242:4242:Alice:/home/alice:/bin/bash\nbob:x:4343:4343:Bob:/home/bob:/bin/bash\n",
    );
    std::fs::create_dir_all(dir.join("root")).unwrap();
    dir.write("home/alice/.profile", "# alice\n");
    std::os::unix::fs::chown(dir.join("home/alice"), Some(4242), Some(4242)).unwrap();
    std::os::unix::fs::chown(dir.join("home/alice/.profile"), Some(4242), Some(4242)).unwrap();
    // bob's home belongs to root: nobody may write bob's files there on his behalf.
    std::fs::create_dir_all(dir.join("home/bob")).unwrap();
    dir
}

/// `hostkit ARGS --root DIR` as `sudo` leaves it: HOME is root's.
fn sudo_in_root(dir: &TestDir, args: &[&str], sudo_user: &str) -> Command {
    let mut cmd = in_root(dir, args);
    cmd.env("HOME", "/root")
        .env("SUDO_USER", sudo_user)
        .env("SUDO_UID", "1000")
        .env("SUDO_GID", "1000");
    cmd
}

#[test]
fn sudo_configures_the_invoking_users_home_from_the_images_passwd() {
    require_root!();
    let dir = image_with_alice();
    let before = snapshot(dir.path());
    let out = crate::util::run(&mut sudo_in_root(&dir, &["apply", "gtk-legacy"], "alice"));
    let (stdout, stderr) = expect(&out, 0);
    has(
        &stderr,
        "user scope for alice (uid 4242, from SUDO_USER/SUDO_UID): home /home/alice",
    );
    has(&stdout, "+++ b/home/alice/.profile");
    has(&stdout, "+++ b/home/alice/.config/gtk-3.0/settings.ini");
    // Files in alice's home are alice's; root's home is untouched.
    for p in [
        "home/alice/.profile",
        "home/alice/.config",
        "home/alice/.config/gtk-3.0/settings.ini",
    ] {
        let meta = std::fs::metadata(dir.join(p)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4242, 4242), "{p}");
    }
    assert_eq!(std::fs::read_dir(dir.join("root")).unwrap().count(), 0);
    expect(
        &crate::util::run(&mut sudo_in_root(&dir, &["revert", "gtk-legacy"], "alice")),
        0,
    );
    same_tree(
        &snapshot(dir.path()),
        &before,
        "revert did not restore the image",
    );

    // --user says it explicitly, with or without sudo.
    let (_, stderr) = at(&dir, &["apply", "gtk-legacy", "--user", "alice"], 0);
    has(&stderr, "user scope for alice (uid 4242, from --user)");
    assert_eq!(
        std::fs::metadata(dir.join("home/alice/.config"))
            .unwrap()
            .uid(),
        4242
    );
    at(&dir, &["revert", "gtk-legacy", "--user", "alice"], 0);
    same_tree(
        &snapshot(dir.path()),
        &before,
        "revert --user did not restore the image",
    );
}

#[test]
fn sudo_variables_and_user_names_are_data_never_instructions() {
    require_root!();
    let dir = image_with_alice();
    let before = snapshot(dir.path());
    let refused = |cmd: &mut Command, needle: &str| {
        let (_, stderr) = expect(&crate::util::run(cmd), 2);
        has(&stderr, needle);
        assert_eq!(
            stderr
                .trim()
                .lines()
                .filter(|l| l.starts_with("error"))
                .count(),
            1,
            "{stderr}"
        );
    };
    refused(
        &mut sudo_in_root(&dir, &["apply", "gtk-legacy"], "../../root"),
        "SUDO_USER=\"../../root\" is not a user name",
    );
    refused(
        &mut sudo_in_root(&dir, &["apply", "gtk-legacy"], "carol"),
        "names carol, who has no account in",
    );
    refused(
        &mut in_root(&dir, &["apply", "gtk-legacy", "--user", "../alice"]),
        "--user \"../alice\": not a user name",
    );
    refused(
        &mut in_root(&dir, &["apply", "gtk-legacy", "--user", "nosuch"]),
        "--user nosuch: no such user in",
    );
    refused(
        &mut in_root(&dir, &["apply", "gtk-legacy", "--user", "bob"]),
        "is owned by uid 0, not by bob (uid 4343)",
    );
    refused(
        in_root(&dir, &["apply", "gtk-legacy"]).env("PKEXEC_UID", "1000; rm -rf /"),
        "PKEXEC_UID=\"1000; rm -rf /\" is not a uid",
    );
    same_tree(
        &snapshot(dir.path()),
        &before,
        "a refused run changed the image",
    );
    refused(
        &mut in_root(&dir, &["apply", "ngroups", "--user", "alice"]),
        "--user is for user scope; recipe ngroups runs in system scope here",
    );
    // `check all --user` checks the user-scope recipes for alice, the others as usual.
    let (all, _) = expect(
        &crate::util::run(&mut in_root(&dir, &["check", "all", "--user", "alice"])),
        1,
    );
    has(&all, "gtk-legacy (user scope");
    has(&all, "ngroups (system scope");

    // Live: a SUDO_UID that is not in the passwd database, and a name that disagrees with it.
    let home = TestDir::new();
    let live = |user: &str, uid: &str| {
        let mut cmd = hk(home.path());
        cmd.args(["check", "gtk-legacy"])
            .env("SUDO_USER", user)
            .env("SUDO_UID", uid);
        cmd
    };
    refused(
        &mut live("ghost", "3999999"),
        "uid 3999999 is not in the passwd database",
    );
    refused(&mut live("root", "1"), "SUDO_USER=root but SUDO_UID=1 is");
}

/// The live path: a real user created with `useradd` in a private mount namespace (on a copy
/// of `/etc` bind-mounted over it, so the machine's `/etc` never changes); root runs hostkit as
/// `sudo` leaves it (HOME=/root, SUDO_USER, SUDO_UID, no session bus).
#[test]
fn sudo_live_configures_the_invoking_user_in_a_private_mount_namespace() {
    require_root!();
    if !tools(&[
        "gsettings",
        "dbus-run-session",
        "dconf",
        "setpriv",
        "useradd",
        "unshare",
    ]) {
        return;
    }
    let ok = Command::new("unshare")
        .args(["-m", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip("`unshare -m` does not work here (needs CAP_SYS_ADMIN)");
        return;
    }
    let dir = TestDir::new();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.join("home");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let script = format!(
        r#"set -eu
cp -a /etc {d}/etc
mount --bind {d}/etc /etc
useradd -l -M -d {home} -s /bin/sh -U hkdesk
uid=$(id -u hkdesk)
mkdir -m 0755 {home}
chown hkdesk:hkdesk {home}
echo "$uid" > {out}/uid
snap() {{ (cd {home} && find . -printf '%p %m %U:%G %s\n' | sort) ; }}
snap > {out}/before
run() {{ env -u DBUS_SESSION_BUS_ADDRESS -u XDG_RUNTIME_DIR -u DISPLAY HOME=/root SUDO_USER=hkdesk SUDO_UID=$uid SUDO_GID=$uid "$@"; }}
run {hk} apply gtk-legacy --set settings_ini=always > {out}/apply.out 2> {out}/apply.err && echo 0 > {out}/apply.rc || echo $? > {out}/apply.rc
rt=$(mktemp -d); chown hkdesk "$rt"; chmod 700 "$rt"
setpriv --reuid=hkdesk --regid=hkdesk --init-groups env -i HOME={home} XDG_RUNTIME_DIR="$rt" PATH=/usr/bin:/bin timeout 60 dbus-run-session -- gsettings get {schema} {key} > {out}/after 2>/dev/null
(cd {home} && find . -user root -not -path './.local/state/hostkit*' | sort) > {out}/root-owned
run {hk} revert gtk-legacy --set settings_ini=always > {out}/revert.out 2> {out}/revert.err && echo 0 > {out}/revert.rc || echo $? > {out}/revert.rc
setpriv --reuid=hkdesk --regid=hkdesk --init-groups env -i HOME={home} XDG_RUNTIME_DIR="$rt" PATH=/usr/bin:/bin timeout 60 dbus-run-session -- gsettings get {schema} {key} > {out}/reverted 2>/dev/null
snap > {out}/end
# Phase 2: hkdesk is logged in: a session bus at /run/user/UID/bus (a private /run/user).
mount -t tmpfs -o mode=0755 tmpfs /run/user
mkdir -m 0700 /run/user/$uid
chown hkdesk:hkdesk /run/user/$uid
setpriv --reuid=hkdesk --regid=hkdesk --init-groups env -i HOME={home} XDG_RUNTIME_DIR=/run/user/$uid PATH=/usr/bin:/bin \
    dbus-daemon --session --address=unix:path=/run/user/$uid/bus --fork --print-pid=3 3> {out}/bus.pid 2>/dev/null
i=0; while [ ! -S /run/user/$uid/bus ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
in_session() {{ setpriv --reuid=hkdesk --regid=hkdesk --init-groups env -i HOME={home} XDG_RUNTIME_DIR=/run/user/$uid DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/$uid/bus PATH=/usr/bin:/bin timeout 60 "$@"; }}
run {hk} apply gtk-legacy --set settings_ini=always > {out}/apply2.out 2> {out}/apply2.err && echo 0 > {out}/apply2.rc || echo $? > {out}/apply2.rc
in_session gsettings get {schema} {key} > {out}/after2 2>/dev/null
run {hk} revert gtk-legacy --set settings_ini=always > {out}/revert2.out 2> {out}/revert2.err && echo 0 > {out}/revert2.rc || echo $? > {out}/revert2.rc
in_session gsettings get {schema} {key} > {out}/reverted2 2>/dev/null
kill $(cat {out}/bus.pid) 2>/dev/null || true
rm -rf "$rt"
snap > {out}/end2
"#,
        d = dir.path().display(),
        home = home.display(),
        out = out.display(),
        hk = crate::util::hostkit_bin().display(),
        schema = SCHEMA,
        key = KEY,
    );
    let result = run_with_timeout(
        Command::new("unshare").args(["-m", "sh", "-c", &script]),
        300,
    );
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    assert!(
        result.status.success(),
        "namespace script failed: {}\napply: {}\n{}",
        texts(&result).1,
        read("apply.out"),
        read("apply.err")
    );
    // The machine's /etc never saw the user.
    assert!(
        !std::fs::read_to_string("/etc/passwd")
            .unwrap()
            .contains("hkdesk:")
    );
    assert_eq!(
        read("apply.rc").trim(),
        "0",
        "apply:\n{}\n{}",
        read("apply.out"),
        read("apply.err")
    );
    has(&read("apply.err"), "user scope for hkdesk");
    has(
        &read("apply.out"),
        &format!(
            "+++ b/{}/.profile",
            home.display().to_string().trim_start_matches('/')
        ),
    );
    assert_eq!(
        read("after").trim(),
        "true",
        "apply:\n{}",
        read("apply.err")
    );
    assert_eq!(
        read("root-owned"),
        "",
        "root-owned files in the user's home"
    );
    assert_eq!(
        read("revert.rc").trim(),
        "0",
        "revert:\n{}\n{}",
        read("revert.out"),
        read("revert.err")
    );
    assert_eq!(read("reverted").trim(), "false");
    assert_eq!(
        read("end"),
        read("before"),
        "revert did not restore the user's home"
    );
    // Logged in: the user's own session bus is used, and its session sees the change at once.
    assert_eq!(
        read("apply2.rc").trim(),
        "0",
        "apply:\n{}\n{}",
        read("apply2.out"),
        read("apply2.err")
    );
    has(
        &read("apply2.err"),
        "writing through hkdesk's session bus (unix:path=/run/user/",
    );
    assert_eq!(
        read("after2").trim(),
        "true",
        "apply:\n{}",
        read("apply2.err")
    );
    assert_eq!(
        read("revert2.rc").trim(),
        "0",
        "revert:\n{}\n{}",
        read("revert2.out"),
        read("revert2.err")
    );
    assert_eq!(read("reverted2").trim(), "false");
    assert_eq!(
        read("end2"),
        read("before"),
        "revert did not restore the user's home"
    );
}

/// One X server at a time (`xvfb-run -a` picks a free display, but two at once may race).
static XVFB: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// True when the real GUI clients can run: Xvfb, the system Python with PyGObject/GTK 3 and
/// PyQt5, and Qt 5's GTK3 platform theme plugin.
fn gui_clients() -> bool {
    if !tools(&["xvfb-run", "xauth", "dbus-run-session", "gsettings"]) {
        return false;
    }
    let py = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import gi; gi.require_version('Gtk', '3.0'); from gi.repository import Gtk; import PyQt5.QtWidgets",
        ])
        .output();
    if !py.is_ok_and(|o| o.status.success()) {
        skip(
            "needs /usr/bin/python3 with python3-gi, gir1.2-gtk-3.0 and python3-pyqt5 (bash .ci/deps)",
        );
        return false;
    }
    if !Path::new("/usr/lib/x86_64-linux-gnu/qt5/plugins/platformthemes/libqgtk3.so").exists()
        && !Path::new("/usr/lib/aarch64-linux-gnu/qt5/plugins/platformthemes/libqgtk3.so").exists()
    {
        skip("needs qt5-gtk-platformtheme (bash .ci/deps)");
        return false;
    }
    true
}

/// A real GTK 3 file chooser dialog (PyGObject) under Xvfb, in a session of its own
/// (`dbus-run-session`, so it reads dconf as a desktop session does), on `home`: the names it
/// lists in `folder`, in its order.
const CHOOSER: &str = r#"
import sys
import gi
gi.require_version("Gtk", "3.0")
from gi.repository import Gtk, GLib, GObject

folder, out = sys.argv[1], sys.argv[2]
dlg = Gtk.FileChooserDialog(title="probe", action=Gtk.FileChooserAction.OPEN)
dlg.set_current_folder(folder)
dlg.show_all()

def trees(w, acc):
    if isinstance(w, Gtk.TreeView):
        acc.append(w)
    if isinstance(w, Gtk.Container):
        w.forall(lambda c: trees(c, acc))
    return acc

tries = [0]
def poll():
    tries[0] += 1
    for tv in trees(dlg, []):
        model = tv.get_model()
        # The file list's GtkFileSystemModel: MODEL_COL_NAME (string), MODEL_COL_SIZE (int64).
        if model is None or model.get_n_columns() < 2:
            continue
        if model.get_column_type(0) != GObject.TYPE_STRING or model.get_column_type(1) != GObject.TYPE_INT64:
            continue
        names = []
        it = model.get_iter_first()
        while it is not None:
            names.append(model.get_value(it, 0))
            it = model.iter_next(it)
        if len(names) >= 2:
            with open(out, "w") as f:
                f.write(" ".join(names))
            Gtk.main_quit()
            return False
    if tries[0] > 200:
        Gtk.main_quit()
        return False
    return True

GLib.timeout_add(50, poll)
Gtk.main()
"#;

fn file_chooser_order(home: &Path, folder: &Path) -> String {
    let _x = XVFB.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TestDir::new();
    let script = dir.write("chooser.py", CHOOSER);
    let out = dir.join("out");
    let runtime = dir.join("run");
    std::fs::create_dir_all(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    let result = run_with_timeout(
        Command::new("env")
            .arg("-i")
            .arg(format!("HOME={}", home.display()))
            .arg(format!("XDG_RUNTIME_DIR={}", runtime.display()))
            .args([
                "PATH=/usr/bin:/bin",
                "xvfb-run",
                "-a",
                "dbus-run-session",
                "--",
            ])
            .arg("/usr/bin/python3")
            .arg(&script)
            .arg(folder)
            .arg(&out),
        120,
    );
    std::fs::read_to_string(&out)
        .unwrap_or_else(|_| panic!("the GTK file chooser listed nothing: {}", texts(&result).1))
}

#[test]
fn a_real_gtk3_file_chooser_lists_folders_first_after_apply_without_a_session_bus() {
    if !gui_clients() || !tools(&["dconf"]) {
        return;
    }
    let d = desk();
    let folder = d.dir.join("folder");
    std::fs::create_dir_all(folder.join("b")).unwrap();
    std::fs::write(folder.join("a.txt"), "").unwrap();
    let args = ["--set", "settings_ini=never"];
    assert_eq!(file_chooser_order(&d.home, &folder), "a.txt b");
    let out = run_with_timeout(
        &mut hk_nobus(&d, &[&["apply", "gtk-legacy"], &args[..]].concat()),
        120,
    );
    expect(&out, 0);
    assert_eq!(file_chooser_order(&d.home, &folder), "b a.txt");
    let out = run_with_timeout(
        &mut hk_nobus(&d, &[&["revert", "gtk-legacy"], &args[..]].concat()),
        120,
    );
    expect(&out, 0);
    assert_eq!(file_chooser_order(&d.home, &folder), "a.txt b");
}

/// A real PyQt5 window, started as the session program of Debian's real Xsession under Xvfb:
/// does Qt load the GTK3 platform theme (libqgtk3.so) from what ~/.xsessionrc sets?
fn qt_loads_gtk3_theme(home: &Path) -> bool {
    let _x = XVFB.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TestDir::new();
    let log = dir.join("qt.log");
    let probe = dir.write(
        "probe",
        format!(
            "#!/bin/sh\nQT_DEBUG_PLUGINS=1 exec /usr/bin/python3 -c '\nimport sys\nfrom PyQt5.QtWidgets import QApplication, QWidget\nfrom PyQt5.QtCore import QTimer\napp = QApplication(sys.argv)\nw = QWidget(); w.show()\nQTimer.singleShot(200, app.quit)\napp.exec_()\n' 2> {}\n",
            log.display()
        ),
    );
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let result = run_with_timeout(
        Command::new("env")
            .arg("-i")
            .arg(format!("HOME={}", home.display()))
            .args([
                "PATH=/usr/bin:/bin",
                "USER=root",
                "LOGNAME=root",
                "xvfb-run",
                "-a",
                "/etc/X11/Xsession",
            ])
            .arg(&probe),
        120,
    );
    let text = std::fs::read_to_string(&log)
        .unwrap_or_else(|_| panic!("the Qt window did not run: {}", texts(&result).1));
    assert!(text.contains("QFactoryLoader"), "no plugin log:\n{text}");
    text.lines()
        .any(|l| l.starts_with("loaded library") && l.contains("libqgtk3.so"))
}

#[test]
fn a_real_pyqt5_window_in_an_xsession_uses_the_gtk3_theme_after_apply() {
    if !gui_clients() {
        return;
    }
    if !Path::new("/etc/X11/Xsession").exists() {
        skip("needs Debian's /etc/X11/Xsession (x11-common; bash .ci/deps)");
        return;
    }
    let dir = TestDir::new();
    dpkg_status(&dir, DEBIAN_12);
    let home = dir.join("home/u");
    std::fs::create_dir_all(&home).unwrap();
    assert!(!qt_loads_gtk3_theme(&home), "gtk3 theme before apply");
    at(&dir, &["apply", "qt-gtk"], 0);
    assert!(qt_loads_gtk3_theme(&home), "no gtk3 theme after apply");
    at(&dir, &["revert", "qt-gtk"], 0);
    assert!(!qt_loads_gtk3_theme(&home), "gtk3 theme after revert");
}

/// A backend that accepts a write and forgets it (`GSETTINGS_BACKEND=memory`, as a dconf
/// write without dconf-service does): `gsettings set` exits 0, the read-back catches it, the
/// step fails with exit 2 and is never reported as changed.
#[test]
fn a_write_that_does_not_stick_fails_with_exit_2_and_is_not_reported_changed() {
    if !tools(&["gsettings"]) {
        return;
    }
    let d = desk();
    let out = run_with_timeout(
        hk_nobus(&d, &["apply", "gtk-legacy", "--set", "settings_ini=never"])
            .env("GSETTINGS_BACKEND", "memory"),
        120,
    );
    let (_, stderr) = expect(&out, 2);
    has(
        &stderr,
        "reads back as `false`, not `true`: the change did not happen",
    );
    has(&stderr, "failed          sort-directories-first");
    assert!(
        !stderr.contains("changed         sort-directories-first"),
        "{stderr}"
    );
    // The steps before it are undone by a plain revert: the setting that never changed is not
    // "changed by someone else", it is simply as before.
    let out = run_with_timeout(
        hk_nobus(&d, &["revert", "gtk-legacy"]).env("GSETTINGS_BACKEND", "memory"),
        120,
    );
    let (_, stderr) = expect(&out, 0);
    assert!(!stderr.contains("changed by someone else"), "{stderr}");
}

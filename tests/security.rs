//! The trust boundary, tested as the attacks on it: hostkit runs as root, and a hostile user
//! owns a home inside the root (`R/home/u`, uid 4242). Whatever that user writes — a journal,
//! a backup, a symbolic or hard link — must never make hostkit change a file outside what the
//! recipe may write; hostkit refuses with exit 2 naming the offending path, and the victim is
//! byte for byte, mode and owner, what it was.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::recipes::{at, expect, has, same_tree, snapshot};
use crate::util::{TestDir, run};

/// The hostile user.
const USER: u32 = 4242;

/// A root with a home `home/u` owned by [`USER`], with a `.profile` of theirs.
fn root_with_user_home() -> TestDir {
    let dir = TestDir::new();
    dir.write("home/u/.profile", "# mine\n");
    chown(&dir.join("home/u"), USER);
    chown(&dir.join("home/u/.profile"), USER);
    dir
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
}

/// A file outside the root that the attack aims at: its bytes, mode and owner.
fn victim() -> (TestDir, PathBuf, String) {
    let dir = TestDir::new();
    let path = dir.write("victim", "root:$6$secret:19000:0:99999:7:::\n");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let state = describe(&path);
    (dir, path, state)
}

fn describe(path: &Path) -> String {
    let meta = std::fs::symlink_metadata(path).unwrap();
    format!(
        "mode {:o} owner {}:{} bytes {:?}",
        meta.mode(),
        meta.uid(),
        meta.gid(),
        std::fs::read(path).unwrap()
    )
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes a state file as `uid` would (mode 0600, owned by it), creating its directories.
fn plant(dir: &TestDir, rel: &str, contents: &str, uid: u32) {
    let path = dir.write(rel, contents);
    let mut p = path.as_path();
    while let Some(parent) = p.parent() {
        if parent == dir.join("home/u") || parent == dir.path() {
            break;
        }
        chown(parent, uid);
        p = parent;
    }
    chown(&path, uid);
}

/// The journal the issue describes: one entry aimed at `victim`, with a matching `after_sha`,
/// new bytes in the backup, a set-user-id mode and the user as owner.
fn evil_journal(victim: &Path, path_field: &str) -> String {
    let now = std::fs::read(victim).unwrap();
    serde_json::json!({
        "version": 2,
        "recipe": "gtk-legacy",
        "scope": "user",
        "home": "/home/u",
        "entries": [{
            "type": "file",
            "step": "overlay-scrolling-env",
            "path": path_field,
            "before_sha": null,
            "after_sha": sha256(&now),
            "backup": "0",
            "mode": 0o4755,
            "owner": [USER, USER],
            "created_dirs": []
        }]
    })
    .to_string()
}

/// `cmd` run in a private mount namespace whose `/etc` and `/var/lib` are empty tmpfs mounts:
/// an attack that worked would write there, never to the host's own files (the test then
/// fails on the files it checks under the root).
fn privately(cmd: &Command) -> Command {
    let mut wrapped = Command::new("unshare");
    wrapped
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(r#"set -e; mount -t tmpfs tmpfs /etc; mount -t tmpfs tmpfs /var/lib; exec "$@""#)
        .arg("sh")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    wrapped
}

/// [`crate::recipes::at`], in a private mount namespace (see [`privately`]).
fn at_privately(dir: &TestDir, args: &[&str], want: i32) -> (String, String) {
    expect(
        &run(&mut privately(&crate::recipes::in_root(dir, args))),
        want,
    )
}

#[test]
fn a_journal_planted_in_a_users_state_directory_is_refused() {
    require_root!();
    let dir = root_with_user_home();
    let (_v, victim, before) = victim();
    let state = "home/u/.local/state/hostkit";
    plant(
        &dir,
        &format!("{state}/gtk-legacy/journal.json"),
        &evil_journal(&victim, victim.to_str().unwrap()),
        USER,
    );
    plant(
        &dir,
        &format!("{state}/gtk-legacy/backups/0"),
        "#!/bin/sh\nexec /bin/sh\n",
        USER,
    );
    let tree = snapshot(dir.path());
    for args in [
        &["revert", "gtk-legacy"][..],
        &["revert", "gtk-legacy", "--force"],
        &["apply", "gtk-legacy"],
    ] {
        let (_, err) = at(&dir, args, 2);
        has(
            &err,
            &format!(
                "{}: owned by uid {USER}, but hostkit runs as root",
                dir.join(state).display()
            ),
        );
        assert_eq!(describe(&victim), before, "the victim changed");
        same_tree(&snapshot(dir.path()), &tree, "the root changed");
    }
}

#[test]
fn a_tampered_journal_cannot_leave_the_home_or_the_root() {
    require_root!();
    // Even a journal hostkit itself would trust (owned by root, mode 0600): its paths are data,
    // resolved again under the root given now and inside the home.
    let dir = root_with_user_home();
    let (_v, victim, before) = victim();
    at(&dir, &["apply", "gtk-legacy"], 0);
    let journal = "home/u/.local/state/hostkit/gtk-legacy/journal.json";
    let up = "../".repeat(12) + victim.to_str().unwrap().trim_start_matches('/');
    for (path_field, backup, complaint) in [
        (
            victim.to_str().unwrap().to_string(),
            "0",
            "is absolute".to_string(),
        ),
        (up.clone(), "0", "contains `..`".to_string()),
        (
            ".profile".to_string(),
            "../../../../../../etc/shadow",
            "is not a number".to_string(),
        ),
    ] {
        let mut j: serde_json::Value =
            serde_json::from_str(&evil_journal(&victim, &path_field)).unwrap();
        j["entries"][0]["backup"] = backup.into();
        std::fs::write(dir.join(journal), j.to_string()).unwrap();
        let tree = snapshot(dir.path());
        let (_, err) = at(&dir, &["revert", "gtk-legacy", "--force"], 2);
        has(
            &err,
            &format!("{}: bad journal: ", dir.join(journal).display()),
        );
        has(&err, &complaint);
        assert_eq!(describe(&victim), before, "the victim changed");
        same_tree(&snapshot(dir.path()), &tree, "the root changed");
    }
    // A state directory others may write is refused too.
    std::fs::write(dir.join(journal), evil_journal(&victim, ".profile")).unwrap();
    let state = dir.join("home/u/.local/state/hostkit");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (_, err) = at(&dir, &["revert", "gtk-legacy"], 2);
    has(
        &err,
        &format!(
            "{}: mode 777 lets group or others write it",
            state.display()
        ),
    );
    assert_eq!(describe(&victim), before);
}

#[test]
fn links_a_user_planted_are_not_followed_out_of_their_home() {
    require_mount_ns!();
    let dir = root_with_user_home();
    let shadow = dir.write("etc/shadow", "root:*:19000:0:99999:7:::\n");
    std::fs::set_permissions(&shadow, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::remove_file(dir.join("home/u/.profile")).unwrap();
    let link = dir.join("home/u/.profile");
    std::os::unix::fs::symlink("/etc/shadow", &link).unwrap();
    chown(&link, USER);
    let tree = snapshot(dir.path());
    let (_, err) = at_privately(&dir, &["apply", "gtk-legacy"], 2);
    has(
        &err,
        &format!(
            "{}: refusing to follow a symbolic link owned by uid {USER} to {} (owned by uid 0)",
            link.display(),
            shadow.display()
        ),
    );
    same_tree(&snapshot(dir.path()), &tree, "the root changed");

    // A directory on the way: ~/.config -> /etc.
    std::fs::remove_file(&link).unwrap();
    let config = dir.join("home/u/.config");
    std::os::unix::fs::symlink("/etc", &config).unwrap();
    chown(&config, USER);
    let tree = snapshot(dir.path());
    let (_, err) = at_privately(&dir, &["apply", "qt-gtk", "--set", "qt4=always"], 2);
    has(
        &err,
        &format!(
            "{}: refusing to follow a symbolic link owned by uid {USER}",
            config.display()
        ),
    );
    same_tree(&snapshot(dir.path()), &tree, "the root changed");

    // A hard link to root's file in the home: neither read into the home nor replaced.
    std::fs::remove_file(&config).unwrap();
    std::fs::hard_link(&shadow, dir.join("home/u/.profile")).unwrap();
    let tree = snapshot(dir.path());
    let (_, err) = at_privately(&dir, &["apply", "gtk-legacy"], 2);
    has(
        &err,
        &format!(
            "{}: a hard link to a file owned by uid 0, not by the home's owner (uid {USER})",
            dir.join("home/u/.profile").display()
        ),
    );
    same_tree(&snapshot(dir.path()), &tree, "the root changed");
}

#[test]
fn links_the_user_owns_to_their_own_files_are_followed_and_new_files_are_theirs() {
    require_root!();
    let dir = root_with_user_home();
    std::fs::remove_file(dir.join("home/u/.profile")).unwrap();
    dir.write("home/u/dotfiles/profile", "# mine\n");
    chown(&dir.join("home/u/dotfiles"), USER);
    chown(&dir.join("home/u/dotfiles/profile"), USER);
    let link = dir.join("home/u/.profile");
    std::os::unix::fs::symlink("dotfiles/profile", &link).unwrap();
    chown(&link, USER);
    let before = snapshot(dir.path());
    at(&dir, &["apply", "qt-gtk", "--set", "qt4=always"], 0);
    at(&dir, &["apply", "gtk-legacy"], 0);
    assert_eq!(
        dir.read("home/u/dotfiles/profile"),
        "# mine\nexport GTK_OVERLAY_SCROLLING=0\n"
    );
    // Files and directories created in the home belong to its owner; hostkit's own state is
    // root's, mode 0700.
    let owner = |rel: &str| std::fs::symlink_metadata(dir.join(rel)).unwrap().uid();
    for rel in [
        "home/u/.config",
        "home/u/.config/Trolltech.conf",
        "home/u/.local/state",
    ] {
        assert_eq!(owner(rel), USER, "{rel}");
    }
    let state = std::fs::symlink_metadata(dir.join("home/u/.local/state/hostkit")).unwrap();
    assert_eq!((state.uid(), state.mode() & 0o777), (0, 0o700));
    at(&dir, &["revert", "gtk-legacy"], 0);
    at(&dir, &["revert", "qt-gtk"], 0);
    same_tree(&snapshot(dir.path()), &before, "revert is not byte-exact");
}

#[test]
fn a_copied_image_reverts_itself_and_leaves_the_original_alone() {
    require_root!();
    let images = TestDir::new();
    let original = images.join("original");
    std::fs::create_dir_all(original.join("etc")).unwrap();
    std::fs::write(original.join("etc/environment"), "PATH=\"/usr/bin\"\n").unwrap();
    let hk = |root: &Path, verb: &str, extra: &[&str], want: i32| {
        let mut cmd = crate::recipes::hk(Path::new("/root"));
        cmd.args([
            verb,
            "qt-gtk",
            "--scope",
            "system",
            "--set",
            "qt4=always",
            "--root",
        ])
        .arg(root)
        .args(extra);
        expect(&run(&mut cmd), want)
    };
    let pristine = snapshot(&original);
    hk(&original, "apply", &[], 0);
    let applied = snapshot(&original);
    assert_ne!(applied, pristine);
    // Copy the image (as `cp -a` does) and revert the copy, also with --force.
    for extra in [&[][..], &["--force"]] {
        let copy = images.join("copy");
        let out = run(Command::new("cp").arg("-a").arg(&original).arg(&copy));
        assert!(out.status.success());
        hk(&copy, "revert", extra, 0);
        same_tree(
            &snapshot(&copy),
            &pristine,
            "the copy did not revert itself",
        );
        same_tree(&snapshot(&original), &applied, "the original changed");
        std::fs::remove_dir_all(&copy).unwrap();
    }
    // Moved, it reverts where it is now.
    let moved = images.join("moved");
    std::fs::rename(&original, &moved).unwrap();
    hk(&moved, "revert", &[], 0);
    same_tree(
        &snapshot(&moved),
        &pristine,
        "the moved image did not revert",
    );
}

#[test]
fn commands_are_never_read_back_from_a_journal() {
    require_mount_ns!();
    // A journal given commands (as version 1 stored them) names a command; revert takes commands from
    // the recipe only, on the live system too (a private mount namespace whose /etc and
    // /var/lib are fresh tmpfs mounts).
    let script = r#"
        set -e
        mount -t tmpfs tmpfs /etc
        mount -t tmpfs tmpfs /var/lib
        mkdir -p /etc/dconf/db/local.d
        HOME=/root "$HK" apply gtk-legacy --scope system --set settings_ini=never >/dev/null
        j=/var/lib/hostkit/gtk-legacy/journal.json
        python3 - "$j" <<'PY'
import json, sys
p = sys.argv[1]
j = json.load(open(p))
j["entries"].append({"type": "reload", "step": "overlay-scrolling-env",
                     "cmd": {"argv": ["touch", "/var/lib/pwned-reload"]}})
for e in j["entries"]:
    if e["type"] == "generated":
        e["cmd"] = {"argv": ["touch", "/var/lib/pwned-generated"]}
json.dump(j, open(p, "w"))
PY
        HOME=/root "$HK" revert gtk-legacy --scope system | grep '^\$' || true
        ls /var/lib
        grep -rc '"cmd"' /var/lib/hostkit || echo "no state left"
    "#;
    let out = run(Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script])
        .env("HK", crate::util::hostkit_bin()));
    let (stdout, _) = expect(&out, 0);
    assert!(!stdout.contains("pwned"), "{stdout}");
    assert!(stdout.contains("$ dconf update"), "{stdout}");
}

#[test]
fn recipes_and_rules_another_user_could_write_are_not_obeyed() {
    require_mount_ns!();
    // A recipe is an instruction (files to write, commands to run): one from a directory or file
    // the hostile user owns or may write is refused, naming it, before anything is planned.
    let dir = TestDir::new();
    let (_v, victim, before) = victim();
    let recipe = format!(
        "summary = \"evil\"\ndescription = \"evil\"\nscopes = [\"system\"]\n[[steps]]\nid = \"own\"\nkind = \"file\"\npath = \"{}\"\ncontent = \"pwned\\n\"\n",
        victim.display()
    );
    dir.write("recipes/evil.toml", &recipe);
    dir.write("rules/evil.toml", "name = \"evil\"\n");
    let hk = |args: &[&str]| {
        let mut cmd = crate::recipes::hk(Path::new("/root"));
        cmd.args(args);
        run(&mut privately(&cmd))
    };
    let recipes = dir.join("recipes");
    let rules = dir.join("rules");
    let r = recipes.to_str().unwrap();
    for (path, owner, mode) in [
        (recipes.clone(), USER, 0o755),
        (recipes.join("evil.toml"), USER, 0o644),
        (recipes.join("evil.toml"), 0, 0o666),
        (recipes.clone(), 0, 0o777),
    ] {
        chown(&path, owner);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        for args in [
            &["list", "--recipes", r][..],
            &["apply", "evil", "--recipes", r, "--scope", "system"],
        ] {
            let (_, err) = expect(&hk(args), 2);
            has(&err, &format!("error: {}: ", path.display()));
            assert_eq!(describe(&victim), before, "the victim changed");
        }
        chown(&path, 0);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755 & mode)).unwrap();
    }
    // Owned by root and not writable by others, the same recipe is read (it is valid).
    let (out, _) = expect(&hk(&["list", "--recipes", r]), 0);
    has(&out, "evil");
    chown(&rules, USER);
    let (_, err) = expect(
        &hk(&["patch", "list", "--rules-dir", rules.to_str().unwrap()]),
        2,
    );
    has(
        &err,
        &format!(
            "{}: owned by uid {USER}; hostkit takes instructions only from files owned by root",
            rules.display()
        ),
    );
}

#[test]
fn a_fifo_among_recipes_or_rules_is_refused_at_once() {
    let dir = TestDir::new();
    for sub in ["recipes", "rules"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        nix::unistd::mkfifo(
            &dir.join(sub).join("x.toml"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
    }
    let (recipes, rules) = (dir.join("recipes"), dir.join("rules"));
    for args in [
        vec!["list", "--recipes", recipes.to_str().unwrap()],
        vec!["patch", "list", "--rules-dir", rules.to_str().unwrap()],
    ] {
        let mut cmd = crate::recipes::hk(Path::new("/root"));
        cmd.args(&args);
        // `run` has a time limit; a FIFO would otherwise hang here.
        let (_, err) = expect(&crate::util::run_with_timeout(&mut cmd, 10), 2);
        has(
            &err,
            "x.toml: not a regular file (a FIFO); refusing to read it",
        );
    }
}

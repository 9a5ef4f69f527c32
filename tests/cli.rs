//! The command line's promises: a failure is never exit 0 (a full stdout included),
//! bad arguments are errors naming them, and errors say their cause once.

use std::path::Path;
use std::process::{Command, Output};

use crate::recipes::{expect, has, hk};
use crate::util::{TestDir, run};

fn hk_args(args: &[&str]) -> Command {
    let mut cmd = hk(Path::new("/nonexistent-home"));
    cmd.args(args);
    cmd
}

/// A root with nothing in it but a home, for recipe commands that must not touch the host.
fn root() -> TestDir {
    let dir = TestDir::new();
    std::fs::create_dir_all(dir.join("home/u")).unwrap();
    dir
}

#[test]
fn results_that_cannot_be_written_are_exit_2() {
    let dir = root();
    let r = dir.path().to_str().unwrap();
    let tree = TestDir::new();
    tree.write("a.txt", "hello\n");
    let rules = TestDir::new();
    rules.write(
        "hello.toml",
        "name = \"hello\"\nsummary = \"greets\"\n\n[[edits]]\nid = \"greet\"\ndescription = \"greet\"\nfiles = [\"*.txt\"]\nfind = \"hello\"\nreplace = \"hello, world\"\n",
    );
    let (t, rd) = (
        tree.path().to_str().unwrap(),
        rules.path().to_str().unwrap(),
    );
    for args in [
        &["list"][..],
        &["show", "gtk-legacy"],
        &["check", "qt-gtk", "--root", r, "--scope", "system"],
        &[
            "apply",
            "qt-gtk",
            "--dry-run",
            "--root",
            r,
            "--scope",
            "system",
        ],
        &["patch", "list"],
        &["patch", "export", "hello", "--rules-dir", rd, "--source", t],
        &["tun", "status", "--run-dir", r],
    ] {
        // A full device: every write fails with ENOSPC.
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = run(hk_args(args).stdout(full));
        let (_, err) = expect(&out, 2);
        has(&err, "cannot write the results to standard output");
        has(&err, "No space left on device");
        // A closed stdout (`>&-`) cannot be told from `/dev/null`: Rust's runtime puts
        // `/dev/null` on a closed standard stream before `main` runs.
    }
    // The tree was not changed by `export`, and `-o -` is stdout.
    let (out, _) = expect(
        &run(&mut hk_args(&[
            "patch",
            "export",
            "hello",
            "--rules-dir",
            rd,
            "--source",
            t,
            "-o",
            "-",
        ])),
        0,
    );
    assert_eq!(
        out,
        "--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-hello\n+hello, world\n"
    );
    assert!(!tree.join("-").exists());
    assert_eq!(tree.read("a.txt"), "hello\n");
}

#[test]
fn set_keys_are_checked_and_given_once() {
    let dir = root();
    let r = dir.path().to_str().unwrap();
    let (_, err) = expect(
        &run(&mut hk_args(&[
            "check",
            "qt-gtk",
            "--root",
            r,
            "--set",
            "qt4=always",
            "--set",
            "qt4=never",
        ])),
        2,
    );
    has(&err, "error: `--set qt4=…` is given twice");
    let (_, err) = expect(
        &run(&mut hk_args(&[
            "check",
            "qt-gtk",
            "--root",
            r,
            "--set",
            "colour=red",
        ])),
        2,
    );
    has(&err, "recipe qt-gtk: unknown parameter `colour`");
    let (_, err) = expect(
        &run(&mut hk_args(&[
            "check",
            "all",
            "--root",
            r,
            "--set",
            "colour=red",
        ])),
        2,
    );
    has(
        &err,
        "`--set colour=red`: no recipe has a parameter `colour`",
    );
}

#[test]
fn recipe_names_are_validated_like_rule_names() {
    for name in ["all", "Bad_Name", "-x"] {
        let dir = TestDir::new();
        dir.write(
            format!("recipes/{name}.toml"),
            "summary = \"s\"\ndescription = \"d\"\nscopes = [\"user\"]\n",
        );
        let recipes = dir.join("recipes");
        let (_, err) = expect(
            &run(&mut hk_args(&[
                "list",
                "--recipes",
                recipes.to_str().unwrap(),
            ])),
            2,
        );
        has(
            &err,
            &format!("{name}.toml:1:1: `{name}` is not a valid recipe name"),
        );
    }
}

#[test]
fn check_all_as_json_lists_a_failing_recipe_with_its_error() {
    let dir = root();
    // A home that is a directory where a file is expected breaks one recipe's check.
    std::fs::create_dir_all(dir.join("home/u/.profile")).unwrap();
    let r = dir.path().to_str().unwrap();
    let mut cmd = hk(Path::new("/home/u"));
    cmd.args(["check", "all", "--root", r, "--format", "json"]);
    let (out, err) = expect(&run(&mut cmd), 2);
    has(&err, "could not check gtk-legacy");
    let all: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    let failed: Vec<&serde_json::Value> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r.get("error").is_some())
        .collect();
    assert_eq!(failed.len(), 1, "{out}");
    assert_eq!(failed[0]["recipe"], "gtk-legacy");
    let error = failed[0]["error"].as_str().unwrap();
    assert!(error.contains("home/u/.profile: is a directory"), "{error}");
    // The others are there, checked.
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|r| r["recipe"] == "qt-gtk" && r["steps"].is_array()),
        "{out}"
    );
}

#[test]
fn patch_apply_keeps_crlf_line_ends() {
    let rules = TestDir::new();
    rules.write(
        "addline.toml",
        "name = \"addline\"\nsummary = \"adds a line\"\n\n[[edits]]\nid = \"add\"\ndescription = \"add\"\nfiles = [\"*.c\"]\nfind = \"int x;\\n\"\nreplace = \"int x;\\nint y;\\n\"\n",
    );
    let tree = TestDir::new();
    tree.write("a.c", "/* dos */\r\nint x;\r\nint z;\r\n");
    let out = run(&mut hk_args(&[
        "patch",
        "apply",
        "addline",
        "--rules-dir",
        rules.path().to_str().unwrap(),
        "--source",
        tree.path().to_str().unwrap(),
    ]));
    expect(&out, 0);
    assert_eq!(
        std::fs::read(tree.join("a.c")).unwrap(),
        b"/* dos */\r\nint x;\r\nint y;\r\nint z;\r\n"
    );
}

#[test]
fn parallel_applies_meet_the_lock_and_leave_no_state_behind() {
    let dir = TestDir::new();
    dir.write("home/u/.profile", "# profile\n");
    let before = crate::recipes::snapshot(dir.path());
    // Ten at once, each bounded (a lock that deadlocked must fail the test, not hang it).
    let ten = |extra: &[&str]| -> Vec<Output> {
        std::thread::scope(|s| {
            let runs: Vec<_> = (0..10)
                .map(|_| {
                    let mut cmd = crate::recipes::in_root(&dir, &["apply", "gtk-legacy"]);
                    cmd.args(extra);
                    s.spawn(move || crate::util::run_with_timeout(&mut cmd, 60))
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        })
    };
    // Without --wait: each one applies, finds it already applied, or names the lock's holder;
    // at least one applies.
    let mut applied = 0;
    for out in ten(&[]) {
        let err = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => applied += 1,
            Some(2) => assert!(
                err.contains("lock: locked by pid "),
                "an unexpected failure: {err}"
            ),
            other => panic!("exit {other:?}: {err}"),
        }
    }
    assert!(applied > 0, "every apply lost the lock");
    assert_eq!(
        dir.read("home/u/.profile"),
        "# profile\nexport GTK_OVERLAY_SCROLLING=0\n"
    );
    expect(
        &run(&mut crate::recipes::in_root(
            &dir,
            &["revert", "gtk-legacy"],
        )),
        0,
    );
    crate::recipes::same_tree(
        &crate::recipes::snapshot(dir.path()),
        &before,
        "state left behind",
    );
    // With --wait: all of them succeed, one after the other.
    for out in ten(&["--wait"]) {
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        dir.read("home/u/.profile"),
        "# profile\nexport GTK_OVERLAY_SCROLLING=0\n"
    );
    expect(
        &run(&mut crate::recipes::in_root(
            &dir,
            &["revert", "gtk-legacy", "--wait"],
        )),
        0,
    );
    crate::recipes::same_tree(
        &crate::recipes::snapshot(dir.path()),
        &before,
        "state left behind",
    );
}

/// The JSON output, pinned byte for byte against `tests/golden/*.json` (the temporary root's
/// path is written as `ROOT`). `HOSTKIT_BLESS=1` rewrites the files after a deliberate change.
#[test]
fn json_output_is_pinned() {
    let dir = TestDir::new();
    dir.write("home/u/.profile", "# profile\n");
    dir.write("etc/environment", "PATH=\"/usr/bin\"\n");
    crate::recipes::dpkg_status(&dir, &[("qt5-gtk-platformtheme", "5.15.8+dfsg-11")]);
    let root = dir.path().to_str().unwrap().to_string();
    let cases: &[(&str, &[&str])] = &[
        ("list", &["list", "--format", "json"]),
        (
            "check-qt-gtk-system",
            &["check", "qt-gtk", "--scope", "system", "--format", "json"],
        ),
        (
            "dry-run-qt-gtk-system",
            &[
                "apply",
                "qt-gtk",
                "--scope",
                "system",
                "--dry-run",
                "--format",
                "json",
            ],
        ),
        (
            "apply-qt-gtk-system",
            &["apply", "qt-gtk", "--scope", "system", "--format", "json"],
        ),
        (
            "revert-qt-gtk-system",
            &["revert", "qt-gtk", "--scope", "system", "--format", "json"],
        ),
        (
            "check-gtk-legacy-user",
            &["check", "gtk-legacy", "--format", "json"],
        ),
    ];
    let bless = std::env::var_os("HOSTKIT_BLESS").is_some();
    let mut differs = Vec::new();
    for (name, args) in cases {
        let mut cmd = crate::recipes::in_root(&dir, args);
        if *name == "list" {
            cmd = hk_args(args);
        }
        let out = run(&mut cmd);
        let (stdout, stderr) = crate::util::texts(&out);
        assert!(matches!(out.status.code(), Some(0 | 1)), "{name}: {stderr}");
        let got = stdout.replace(&root, "ROOT");
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(format!("{name}.json"));
        if bless {
            assert!(!crate::util::in_ci(), "HOSTKIT_BLESS is refused under CI");
            std::fs::write(&path, &got).unwrap();
            differs.push(format!(
                "{name}: blessed (rerun without HOSTKIT_BLESS to check)"
            ));
        } else {
            let want = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (HOSTKIT_BLESS=1 writes it)", path.display()));
            if got != want {
                differs.push(format!("{name}:\n--- want\n{want}\n+++ got\n{got}"));
            }
        }
    }
    assert!(
        differs.is_empty(),
        "JSON output changed:\n{}",
        differs.join("\n")
    );
}

#[test]
fn tun_up_refuses_bad_arguments_before_anything_changes() {
    // Each is refused with exit 2 and a message naming the argument; with --dry-run (nothing
    // would change anyway) and, as root, for real in a namespace the test made.
    let cases: &[(&[&str], &str)] = &[
        (&["--dev0", "all"], "invalid device name \"all\": reserved"),
        (
            &["--dev1", "default"],
            "invalid device name \"default\": reserved",
        ),
        (
            &["--dev0", "tun%d"],
            "invalid device name \"tun%d\": contains '%'",
        ),
        (
            &["--txqueuelen", "4294967295"],
            "invalid value '4294967295' for '--txqueuelen <PACKETS>'",
        ),
        (
            &["--engine", "simple", "--queues", "4"],
            "--queues applies to the fast engine only",
        ),
        (
            &["--no-routing", "--rules", "first-only"],
            "'--no-routing' cannot be used with '--rules <RULES>'",
        ),
    ];
    for (args, want) in cases {
        let mut cmd = hk_args(&["tun", "up", "--dry-run"]);
        cmd.args(*args);
        let (out, err) = expect(&run(&mut cmd), 2);
        assert!(
            out.is_empty(),
            "{args:?}: a dry run printed commands:\n{out}"
        );
        has(&err, want);
    }
    // A dry run refuses what `up` refuses: an existing device that is not a TUN device.
    let (_, err) = expect(
        &run(&mut hk_args(&["tun", "up", "--dry-run", "--dev0", "lo"])),
        2,
    );
    has(&err, "device \"lo\" exists but is not a TUN device");
    if !crate::util::is_root() {
        crate::util::skip("the real `up` part needs root (a network namespace)");
        return;
    }
    let ns = crate::util::NetNs::new();
    let run_dir = TestDir::new();
    let before = ns.ip(&["-d", "link"]);
    for (args, want) in cases {
        let mut cmd = hk_args(&["tun", "up", "--netns", ns.name()]);
        cmd.args(*args).env("HOSTKIT_RUN_DIR", run_dir.join("run"));
        let (_, err) = expect(&crate::util::run_with_timeout(&mut cmd, 20), 2);
        has(&err, want);
        assert_eq!(ns.ip(&["-d", "link"]), before, "{args:?} changed the links");
    }
}

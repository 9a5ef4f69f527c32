//! `hostkit tun`: the trust boundary, each test written as the attack. The state file and the run
//! directory are what an unprivileged user would tamper with; hostkit (root) must refuse them
//! with exit 2 naming the path or entry, and change nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::signal::Signal;

use crate::tun::{Up, snapshot};
use crate::util::{NetNs, TestDir, hostkit, run, run_with_timeout, texts};

/// The one state file in a run directory.
pub(crate) fn state_file(run_dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(run_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

/// Starts a tunnel and SIGKILLs it, leaving its record (and, on persistent devices, its
/// changes) behind; returns the record's path.
fn killed_tunnel(ns: &NetNs, dir: &TestDir) -> PathBuf {
    let up = Up::start(ns, dir, "simple", &[], &[]);
    let (status, _, _) = up.stop(Signal::SIGKILL);
    assert!(!status.success());
    state_file(&dir.join("run"))
}

/// Edits a state file's undo list (the file stays root's, mode 0600).
fn tamper(path: &Path, f: impl FnOnce(&mut Vec<serde_json::Value>)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(v["undo"].as_array_mut().unwrap());
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// `hostkit tun SUB --netns NS --run-dir DIR`; returns (exit code, stdout, stderr).
fn tun(sub: &str, ns: &NetNs, run_dir: &Path) -> (Option<i32>, String, String) {
    // Bounded: a refusal that broke would otherwise leave `up` relaying forever.
    let out = run_with_timeout(
        hostkit()
            .args(["tun", sub, "--netns", ns.name(), "--run-dir"])
            .arg(run_dir),
        60,
    );
    let (o, e) = texts(&out);
    assert!(!e.contains("panicked"), "{e}");
    (out.status.code(), o, e)
}

fn ifindex(ns: &NetNs, dev: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(&ns.ip(&["-j", "link", "show", dev])).unwrap();
    v[0]["ifindex"].as_u64().unwrap()
}

#[test]
fn a_forged_sysctl_key_in_the_state_file_is_refused_and_the_victim_untouched() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let victim = dir.write("victim", "precious bytes\n");
    let state = killed_tunnel(&ns, &dir);
    let key = format!("../../..{}", victim.display());
    tamper(&state, |undo| {
        undo.push(serde_json::json!({"undo": "restore-sysctl", "key": key, "value": "1"}))
    });
    let before = snapshot(&ns);
    let (code, out, err) = tun("down", &ns, &dir.join("run"));
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        err.contains("restore-sysctl") && err.contains(&key),
        "{err}"
    );
    assert!(err.contains(&state.display().to_string()), "{err}");
    assert!(err.contains("not one that `up` writes"), "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious bytes\n");
    assert_eq!(snapshot(&ns), before, "something was undone:\n{out}");
    assert!(state.exists(), "the evidence was removed");
}

#[test]
fn a_delete_link_entry_for_a_device_up_never_created_leaves_it_alone() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    // 1. An entry naming a device that is not the tunnel's: refused outright.
    ns.ip(&[
        "link", "add", "victim0", "type", "veth", "peer", "name", "victim0p",
    ]);
    let state = killed_tunnel(&ns, &dir);
    let victim_index = ifindex(&ns, "victim0");
    tamper(&state, |undo| {
        undo.push(serde_json::json!({
            "undo": "delete-link", "dev": "victim0", "ifindex": victim_index, "kind": "tun"
        }))
    });
    let (code, out, err) = tun("down", &ns, &dir.join("run"));
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        err.contains("victim0") && err.contains("not one of the tunnel's devices"),
        "{err}"
    );
    assert_eq!(ifindex(&ns, "victim0"), victim_index);

    // 2. The tunnel's own names, now other devices: a new TUN device tun0 (another ifindex)
    // and a veth tun1 whose ifindex the entry was made to match. Both stay.
    tamper(&state, |undo| {
        undo.pop();
    });
    ns.ip(&["tuntap", "add", "dev", "tun0", "mode", "tun"]);
    ns.ip(&[
        "link", "add", "tun1", "type", "veth", "peer", "name", "tun1p",
    ]);
    let (tun0, tun1) = (ifindex(&ns, "tun0"), ifindex(&ns, "tun1"));
    tamper(&state, |undo| {
        for u in undo.iter_mut() {
            if u["undo"] == "delete-link" && u["dev"] == "tun1" {
                u["ifindex"] = tun1.into();
            }
        }
    });
    let (code, out, err) = tun("down", &ns, &dir.join("run"));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("left alone: delete device tun0: tun0 is now interface"),
        "{out}"
    );
    assert!(
        out.contains("left alone: delete device tun1: tun1 is now a veth device"),
        "{out}"
    );
    assert_eq!((ifindex(&ns, "tun0"), ifindex(&ns, "tun1")), (tun0, tun1));
    assert!(!ns.ip(&["rule"]).contains("iif tun"), "the rules are ours");
}

/// A run directory another user controls: `up` and `down` refuse it, naming it and why.
#[test]
fn an_untrusted_run_dir_is_refused_by_up_and_down() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let before = snapshot(&ns);
    let set_mode =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    // Owned by an unprivileged uid, with a planted state file in it.
    let theirs = dir.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let planted = theirs.join("tun-0-tun0-tun1.json");
    std::fs::write(&planted, "{}").unwrap();
    std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).unwrap();
    // Root's, but world-writable.
    let open = dir.join("open");
    std::fs::create_dir(&open).unwrap();
    set_mode(&open, 0o777);
    // A symbolic link owned by that uid, to a good directory.
    let good = dir.join("good");
    std::fs::create_dir(&good).unwrap();
    set_mode(&good, 0o700);
    let link = dir.join("link");
    std::os::unix::fs::symlink(&good, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
    // A regular file.
    let file = dir.write("file", "");
    let cases: [(&Path, &str); 4] = [
        (&theirs, "owned by uid 65534"),
        (&open, "world-writable (mode 0777)"),
        (&link, "symbolic link owned by uid 65534"),
        (&file, "not a directory (it is a regular file)"),
    ];
    for (path, why) in cases {
        for sub in ["up", "down", "status"] {
            let (code, out, err) = tun(sub, &ns, path);
            assert_eq!(code, Some(2), "{sub} {}: {out}{err}", path.display());
            assert!(
                err.contains(&format!("refusing run directory {}", path.display()))
                    && err.contains(why),
                "{sub}: {err}"
            );
            assert_eq!(
                snapshot(&ns),
                before,
                "{sub} {} changed the namespace",
                path.display()
            );
        }
    }
    // The same through HOSTKIT_RUN_DIR.
    let out = run(hostkit()
        .args(["tun", "up", "--netns", ns.name()])
        .env("HOSTKIT_RUN_DIR", &open));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        texts(&out).1.contains("world-writable"),
        "{}",
        texts(&out).1
    );
    assert_eq!(std::fs::read_dir(&good).unwrap().count(), 0);
    assert_eq!(snapshot(&ns), before);
}

#[test]
fn a_state_file_that_is_a_link_not_roots_or_a_fifo_is_refused() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let state = killed_tunnel(&ns, &dir);
    let before = snapshot(&ns);
    let down_refuses = |why: &str| {
        let (code, out, err) = tun("down", &ns, &dir.join("run"));
        assert_eq!(code, Some(2), "{out}{err}");
        assert!(
            err.contains(&format!("refusing {}", state.display())) && err.contains(why),
            "{err}"
        );
        assert_eq!(snapshot(&ns), before, "something was undone");
    };
    // Not root's.
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    down_refuses("owned by uid 65534");
    std::os::unix::fs::chown(&state, Some(0), Some(0)).unwrap();
    // A symbolic link to a (valid, root-owned) record elsewhere.
    let elsewhere = dir.join("elsewhere.json");
    std::fs::rename(&state, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &state).unwrap();
    down_refuses("symbolic link");
    // A FIFO: refused at once, never waited on.
    std::fs::remove_file(&state).unwrap();
    run(Command::new("mkfifo").arg(&state));
    let start = std::time::Instant::now();
    down_refuses("FIFO");
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    // Put the real record back: `down` then undoes it.
    std::fs::remove_file(&state).unwrap();
    std::fs::rename(&elsewhere, &state).unwrap();
    let (code, out, err) = tun("down", &ns, &dir.join("run"));
    assert_eq!(code, Some(0), "{out}{err}");
}

#[test]
fn down_signals_only_the_process_that_holds_the_lock_never_the_pid_the_file_names() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let path = killed_tunnel(&ns, &dir);
    // A bystander, named in the state file as the relay; the lock held by this test instead.
    let mut victim = Command::new("sleep").arg("30").spawn().unwrap();
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["pid"] = victim.id().into();
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    let lock = std::fs::File::open(path.with_extension("lock")).unwrap();
    let held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    let (code, out, err) = tun("down", &ns, &dir.join("run"));
    let alive = victim.try_wait().unwrap().is_none();
    let _ = victim.kill();
    let _ = victim.wait();
    drop(held);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("not signalling anyone"), "{err}");
    assert!(alive, "tun down signalled the pid the state file named");
}

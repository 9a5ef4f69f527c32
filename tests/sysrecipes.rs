//! The system recipes (`ngroups`, `procps`, `rtl8139`, `udisks2-media`) and the recipe door
//! `hostkit apply RECIPE --source DIR`: temporary roots with fixture `/etc`, `/proc`- and
//! `/sys`-like files, the real kmod `modprobe`, `ps`, `setpriv` and GNU `patch`; the live
//! probes run in child processes as root.

use std::process::Command;

use crate::patch::{assert_diff_has, fixture, gnu_patch};
use crate::recipes::{at, cycle, dpkg_status, has, in_root, same_tree, snapshot};
use crate::util::{TestDir, hostkit, run, texts};

/// The statuses and reasons of a `check --format json` report, by step id.
fn statuses(dir: &TestDir, args: &[&str], want: i32) -> Vec<(String, String, String)> {
    let (stdout, _) = at(dir, &[&["check", "--format", "json"], args].concat(), want);
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or("").to_string(),
                s["status"].as_str().unwrap_or("").to_string(),
                s["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The (status, reason) of one step.
#[track_caller]
fn step<'a>(all: &'a [(String, String, String)], id: &str) -> (&'a str, &'a str) {
    let s = all
        .iter()
        .find(|s| s.0 == id)
        .unwrap_or_else(|| panic!("no step {id} in {all:?}"));
    (s.1.as_str(), s.2.as_str())
}

/// Asserts one step's status and reason.
#[track_caller]
fn expect_step(all: &[(String, String, String)], id: &str, status: &str, reason: &str) {
    assert_eq!(step(all, id), (status, reason), "step {id}");
}

/// `/etc/passwd` and `/etc/group` where alice is in 40 groups (39 + her primary).
fn many_groups(dir: &TestDir) {
    dir.write(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000:Alice:/home/alice:/bin/bash\nbob:x:1001:1001::/home/bob:/bin/sh\n",
    );
    let mut group = String::from("root:x:0:\nalice:x:1000:\nbob:x:1001:\n");
    for i in 0..39 {
        group.push_str(&format!(
            "proj{i}:x:{}:alice{}\n",
            2000 + i,
            if i < 20 { ",bob" } else { "" }
        ));
    }
    group.push_str("broken-line\n");
    dir.write("etc/group", group);
}

#[test]
fn ngroups_offline_on_an_old_image_reports_limits_memberships_and_nfs() {
    let dir = TestDir::new();
    many_groups(&dir);
    dir.write("proc/sys/kernel/ngroups_max", "32\n");
    dir.write(
        "etc/fstab",
        "/dev/sda1 / ext4 defaults 0 1\nsrv:/home /home nfs rw,hard 0 0\nsrv:/secure /secure nfs4 sec=krb5p 0 0\n",
    );
    let before = snapshot(dir.path());
    // Nothing would change (every step reports), so check exits 0 even with `manual` steps.
    let s = statuses(&dir, &["ngroups"], 0);
    expect_step(
        &s,
        "kernel-limit",
        "ok",
        "kernel limit 32 (/proc/sys/kernel/ngroups_max): a fixed group array; a user in more groups loses the rest at login (rebuild: hostkit apply ngroups --source KERNEL-TREE --set limit=N)",
    );
    expect_step(
        &s,
        "libc-limit",
        "not applicable",
        "live probe, not run under --root: sysconf(_SC_NGROUPS_MAX) answers for the running C library, not the image's",
    );
    let (status, reason) = step(&s, "memberships");
    assert_eq!(status, "manual");
    assert_eq!(
        reason.lines().collect::<Vec<_>>(),
        [
            "largest membership: alice in 40 group(s), primary included (3 users; 2 in more than 16 groups, 1 in more than 32)",
            "warning: etc/group:43: expected 4 fields separated by `:`, found 1; line skipped",
            "alice is in 40 groups but the kernel allows 32: the groups past the 32th are lost at login; build a kernel with a larger limit (hostkit apply ngroups --source KERNEL-TREE --set limit=N) or trim the memberships",
        ]
    );
    expect_step(
        &s,
        "nfs-auth-sys",
        "manual",
        "users in more than 16 groups: alice (40), bob (21); NFS with sec=sys (AUTH_SYS carries 16 groups and silently drops the rest): srv:/home on /home (etc/fstab:2); use sec=krb5 (the server looks the groups up), or `rpc.mountd --manage-gids` on the server",
    );
    expect_step(
        &s,
        "live-proof",
        "not applicable",
        "live probe, not run under --root: it starts a child process on this host",
    );
    // apply has nothing to do, says so, exits 0 and writes nothing.
    let (stdout, stderr) = at(&dir, &["apply", "ngroups"], 0);
    assert_eq!(stdout, "");
    has(
        &stderr,
        "ngroups: nothing to do on this host: no step here needs a change",
    );
    has(&stderr, "hostkit apply ngroups --source DIR");
    same_tree(
        &snapshot(dir.path()),
        &before,
        "check/apply ngroups wrote something",
    );
}

#[test]
fn ngroups_on_a_modern_image_is_fine_and_bad_files_are_errors() {
    let dir = TestDir::new();
    dir.write("etc/passwd", "root:x:0:0:root:/root:/bin/bash\n");
    dir.write("etc/group", "root:x:0:\n");
    dir.write("proc/sys/kernel/ngroups_max", "65536\n");
    dir.write(
        "proc/mounts",
        "srv:/data /data nfs4 rw,vers=4.2,sec=sys 0 0\n",
    );
    let s = statuses(&dir, &["ngroups"], 0);
    assert_eq!(step(&s, "kernel-limit").0, "ok");
    expect_step(
        &s,
        "nfs-auth-sys",
        "ok",
        "NFS with sec=sys: srv:/data on /data (proc/mounts:1); no user is in more than 16 groups, so AUTH_SYS loses none",
    );
    dir.write("proc/sys/kernel/ngroups_max", "lots\n");
    let (_, stderr) = at(&dir, &["check", "ngroups"], 2);
    has(
        &stderr,
        "proc/sys/kernel/ngroups_max:1: expected a number, found `lots`",
    );
    // `check all` still checks the other recipes, then fails naming the one it could not.
    let (stdout, stderr) = at(&dir, &["check", "all", "--scope", "system"], 2);
    has(&stdout, "  => rtl8139: ");
    has(&stderr, "error: recipe ngroups");
    has(
        &stderr,
        "error: could not check ngroups (see the errors above)",
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn ngroups_live_proof_sets_1024_groups_in_a_child() {
    require_root!();
    let out = run(hostkit().args(["check", "ngroups", "--format", "json"]));
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let live = &report["steps"][4];
    assert_eq!(live["id"], "live-proof");
    assert_eq!(live["status"], "ok", "{live}");
    let reason = live["reason"].as_str().unwrap_or("");
    assert!(
        reason.starts_with("proved live: a child process took 1024 supplementary groups")
            && reason.ends_with("read all 1024 back"),
        "{reason}"
    );
    assert_eq!(
        report["steps"][1]["status"], "ok",
        "libc-limit: {}",
        report["steps"][1]
    );
    // The same observation, made here with the real tools: the gids hostkit names, set on a
    // child with setpriv, read back by id -G.
    let range = reason
        .split("gids ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .expect("hostkit names the gids it used");
    let (lo, hi) = range.split_once('-').expect("a gid range");
    let (lo, hi): (u32, u32) = (lo.parse().unwrap(), hi.parse().unwrap());
    assert_eq!(hi - lo + 1, 1024, "{reason}");
    let list: Vec<String> = (lo..=hi).map(|g| g.to_string()).collect();
    let out = run(Command::new("setpriv")
        .arg(format!("--groups={}", list.join(",")))
        .args(["id", "-G"]));
    let (ids, err) = texts(&out);
    assert!(out.status.success(), "{err}");
    let back: std::collections::BTreeSet<u32> = ids
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        (lo..=hi).all(|g| back.contains(&g)),
        "id -G read {} of 1024 back",
        (lo..=hi).filter(|g| back.contains(g)).count()
    );
}

#[test]
fn procps_live_compares_ps_with_proc_status_for_300_groups() {
    require_root!();
    let out = run(hostkit().args(["check", "procps", "--format", "json"]));
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let version = report["steps"][0]["reason"].as_str().unwrap_or("");
    let ps = run(Command::new("ps").arg("--version"));
    let first = texts(&ps).0.lines().next().unwrap_or("").to_string();
    has(version, &format!("`ps --version`: {first}"));
    let live = &report["steps"][1];
    assert_eq!(live["status"], "ok", "{live}");
    assert!(
        live["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("proved live: for a child in 300 groups, `ps -o supgid=` listed all 300"),
        "{live}"
    );
    // The same observation, made here: a child in 300 groups, what ps lists for it, and what
    // the kernel says in /proc/PID/status.
    let list: Vec<String> = (70000..70300).map(|g: u32| g.to_string()).collect();
    let mut child = Command::new("setpriv")
        .arg(format!("--groups={}", list.join(",")))
        .args(["sleep", "30"])
        .spawn()
        .expect("setpriv");
    let pid = child.id().to_string();
    let kernel: Vec<String> = (0..100)
        .find_map(|_| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let groups: Vec<String> = status
                .lines()
                .find_map(|l| l.strip_prefix("Groups:"))?
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if groups.len() == 300 {
                Some(groups)
            } else {
                std::thread::sleep(std::time::Duration::from_millis(20));
                None
            }
        })
        .expect("the child took 300 groups");
    let ps = run(Command::new("ps").args(["-o", "supgid=", "-p", &pid]));
    let _ = child.kill();
    let _ = child.wait();
    let listed: Vec<String> = texts(&ps).0.trim().split(',').map(str::to_string).collect();
    assert_eq!(listed, kernel, "ps and /proc/PID/status disagree");
    assert_eq!(listed, list);
}

#[test]
fn procps_version_from_an_images_package_database() {
    let dir = TestDir::new();
    dpkg_status(&dir, &[("procps", "1:3.2.8-9")]);
    let s = statuses(&dir, &["procps"], 0);
    expect_step(
        &s,
        "version",
        "manual",
        "package procps 1:3.2.8-9: this procps reads /proc/PID/status into a fixed buffer; processes in about 100 groups or more give random \"Internal error\" messages; rebuild it: hostkit apply procps --source PROCPS-TREE [--set size=N]",
    );
    dpkg_status(&dir, &[("procps", "2:4.0.2-3")]);
    let s = statuses(&dir, &["procps"], 0);
    assert_eq!(step(&s, "version").0, "ok");
    assert_eq!(step(&s, "many-groups").0, "not applicable");
}

/// Runs the recipe door on a fixture tree: dry run prints the diff and changes nothing;
/// GNU `patch -p1` applies that diff to a second copy; apply makes the same tree; a second
/// apply changes nothing.
fn source_door(recipe: &str, rule: &str, tree: &str, sets: &[&str]) -> (String, String) {
    let dir = fixture(rule, tree);
    let src = dir.path().to_str().expect("utf-8").to_string();
    let mut args = vec!["apply", recipe, "--source", &src];
    for s in sets {
        args.extend(["--set", s]);
    }
    let before = snapshot(dir.path());
    let dry = run(hostkit().args(&args).arg("--dry-run"));
    let (diff, stderr) = texts(&dry);
    assert_eq!(dry.status.code(), Some(0), "{stderr}");
    same_tree(
        &snapshot(dir.path()),
        &before,
        "the dry run changed the tree",
    );
    let by_patch = fixture(rule, tree);
    let scratch = TestDir::new();
    let diff_file = scratch.write("door.diff", &diff);
    gnu_patch(by_patch.path(), &diff_file);
    let applied = run(hostkit().args(&args));
    let (applied_diff, _) = texts(&applied);
    assert_eq!(applied.status.code(), Some(0));
    assert_eq!(applied_diff, diff);
    same_tree(
        &snapshot(dir.path()),
        &snapshot(by_patch.path()),
        "patch -p1 of the printed diff and apply differ",
    );
    let again = run(hostkit().args(&args));
    let (out, err) = texts(&again);
    assert_eq!((again.status.code(), out.as_str()), (Some(0), ""), "{err}");
    has(&err, "is already applied");
    (diff, stderr)
}

#[test]
fn apply_ngroups_source_runs_the_patch_rules_and_warns() {
    let (diff, stderr) = source_door("ngroups", "ngroups", "linux-2.4", &["limit=1024"]);
    assert_diff_has(
        &diff,
        &[
            "--- a/include/asm-i386/param.h",
            "+++ b/include/asm-i386/param.h",
            "-#define NGROUPS\t\t32",
            "+#define NGROUPS\t\t1024",
            "-#define NGROUPS_MAX       32\t/* supplemental group IDs are available */",
            "+#define NGROUPS_MAX       1024\t/* supplemental group IDs are available */",
        ],
    );
    has(
        &stderr,
        "warning: on a 2.4 kernel the group array sits in task_struct on the 8 KiB kernel stack",
    );
    has(
        &stderr,
        "ngroups: rule(s) shadow-groups left out: none of their files are in",
    );
    let (diff, stderr) = source_door("ngroups", "ngroups", "sysroot", &[]);
    assert_diff_has(&diff, &["+++ b/usr/include/linux/limits.h"]);
    has(
        &stderr,
        "warning: do not `make install` a rebuilt C library over the running one",
    );
}

#[test]
fn apply_procps_source_names_the_buffer_size() {
    let (diff, _) = source_door("procps", "procps", "procps-3.2.8", &["size=8192"]);
    assert_diff_has(
        &diff,
        &["+#define STATUS_BUF_SIZE 8192  /* /proc/PID/status grows with the Groups: line */"],
    );
}

#[test]
fn the_source_door_refuses_bad_input() {
    let dir = fixture("ngroups", "linux-2.4");
    let src = dir.path().to_str().expect("utf-8");
    let before = snapshot(dir.path());
    for (args, message) in [
        (
            vec!["apply", "ngroups", "--source", src, "--set", "limt=3"],
            "error: rule `(recipe ngroups)` has no parameter `limt` (its parameters: limit, libc_limit",
        ),
        (
            vec!["apply", "ngroups", "--source", src, "--set", "limit=7"],
            "limit",
        ),
        (
            vec!["apply", "rtl8139", "--source", src],
            "error: recipe rtl8139 has no source-tree rules, so --source does not apply to it; recipes with rules: ngroups, procps, udisks2-media",
        ),
        (
            vec!["apply", "ngroups", "--source", src, "--root", src],
            "cannot be used with",
        ),
    ] {
        let out = run(hostkit().args(&args));
        let (_, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        has(&stderr, message);
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    same_tree(
        &snapshot(dir.path()),
        &before,
        "a refused --source changed the tree",
    );
}

/// A PCI device directory under `ROOT/sys/bus/pci/devices`.
fn pci(dir: &TestDir, address: &str, vendor: &str, device: &str, revision: &str) {
    let base = format!("sys/bus/pci/devices/{address}");
    dir.write(format!("{base}/vendor"), format!("{vendor}\n"));
    dir.write(format!("{base}/device"), format!("{device}\n"));
    dir.write(format!("{base}/revision"), format!("{revision}\n"));
}

const BLACKLIST: &str = "\
--- /dev/null
+++ b/etc/modprobe.d/hostkit-rtl8139.conf
@@ -0,0 +1,3 @@
+# Managed by hostkit (recipe rtl8139): Realtek 8139 cards (10ec:8139) get 8139too, not 8139cp.
+# 8139cp is the driver of the RTL8139C+ only (PCI revision 0x20 and above).
+blacklist 8139cp
";

/// `modprobe -C ROOT/etc/modprobe.d -C ROOT/lib/modprobe.d ARGS` (the real kmod).
fn kmod(dir: &TestDir, args: &[&str]) -> (Option<i32>, String) {
    let out = run(Command::new("modprobe")
        .arg("-C")
        .arg(dir.join("etc/modprobe.d"))
        .arg("-C")
        .arg(dir.join("lib/modprobe.d"))
        .args(args));
    let (stdout, stderr) = texts(&out);
    (out.status.code(), stdout + &stderr)
}

#[test]
fn rtl8139_blacklist_cycle_with_a_plain_8139_and_the_real_modprobe() {
    let dir = TestDir::new();
    pci(&dir, "0000:00:01.0", "0x8086", "0x7000", "0x00");
    pci(&dir, "0000:02:00.0", "0x10ec", "0x8139", "0x10");
    dir.write(
        "var/log/kern.log",
        "Jan  1 00:00:01 host kernel: 8139cp 0000:02:00.0: This (id 10ec:8139 rev 10) is not an 8139C+ compatible chip, use 8139too\nJan  1 00:00:01 host kernel: 8139too: 8139too Fast Ethernet driver 0.9.28\n",
    );
    dir.write("lib/modprobe.d/50-vendor.conf", "options 8139too debug=1\n");
    let s = statuses(&dir, &["rtl8139"], 1);
    expect_step(
        &s,
        "card",
        "ok",
        "0000:02:00.0 10ec:8139 revision 0x10 (8139/8139A/B/C: 8139too is its driver; no driver bound)",
    );
    expect_step(
        &s,
        "kernel-hint",
        "ok",
        "the kernel's own hint (var/log/kern.log): \"Jan  1 00:00:01 host kernel: 8139cp 0000:02:00.0: This (id 10ec:8139 rev 10) is not an 8139C+ compatible chip, use 8139too\": 8139cp looked at the card, found it is not an 8139C+ and left it to 8139too; blocking 8139cp only saves that failed probe",
    );
    assert_eq!(step(&s, "blacklist").0, "would change");
    expect_step(
        &s,
        "install-false",
        "not applicable",
        "only with --set hard=true",
    );
    assert_eq!(
        step(&s, "modprobe-config").1.lines().collect::<Vec<_>>(),
        [
            "8139cp is not blocked: both drivers claim 10ec:8139 and whichever loads first binds the card",
            "lib/modprobe.d/50-vendor.conf:1: options 8139too debug=1",
            "read: /lib/modprobe.d",
            "confirmed by the real `modprobe -C DIR… -c` (kmod)",
        ]
    );
    expect_step(
        &s,
        "legacy-pcimapfile",
        "not applicable",
        "/etc/modules.conf does not exist",
    );

    let applied = cycle(&dir, &["rtl8139"], BLACKLIST);
    let conf = applied
        .keys()
        .find(|k| k.ends_with("etc/modprobe.d/hostkit-rtl8139.conf"));
    assert!(conf.is_some(), "{applied:?}");
    // Apply again to look at it with the real kmod and the check.
    at(&dir, &["apply", "rtl8139"], 0);
    let (code, config) = kmod(&dir, &["-c"]);
    assert_eq!(code, Some(0), "{config}");
    assert!(config.lines().any(|l| l == "blacklist 8139cp"), "{config}");
    let s = statuses(&dir, &["rtl8139"], 0);
    assert_eq!(
        step(&s, "modprobe-config").1.lines().collect::<Vec<_>>(),
        [
            "8139cp is blacklisted: hardware autoload (by alias) skips it and 8139too drives the card; `modprobe 8139cp` by name still loads it",
            "lib/modprobe.d/50-vendor.conf:1: options 8139too debug=1",
            "etc/modprobe.d/hostkit-rtl8139.conf:3: blacklist 8139cp",
            "read: /etc/modprobe.d, /lib/modprobe.d",
            "confirmed by the real `modprobe -C DIR… -c` (kmod)",
        ]
    );
    at(&dir, &["revert", "rtl8139"], 0);
}

#[test]
fn rtl8139_hard_mode_installs_bin_false_which_kmod_runs_instead() {
    let dir = TestDir::new();
    let diff = "\
--- /dev/null
+++ b/etc/modprobe.d/hostkit-rtl8139.conf
@@ -0,0 +1,3 @@
+# Managed by hostkit (recipe rtl8139): 8139cp never loads; Realtek 8139 cards get 8139too.
+# 8139cp is the driver of the RTL8139C+ only (PCI revision 0x20 and above).
+install 8139cp /bin/false
";
    cycle(&dir, &["rtl8139", "--set", "hard=true"], diff);
    at(&dir, &["apply", "rtl8139", "--set", "hard=true"], 0);
    let (code, dry) = kmod(&dir, &["-n", "-v", "8139cp"]);
    assert_eq!((code, dry.trim()), (Some(0), "install /bin/false"));
    let s = statuses(&dir, &["rtl8139", "--set", "hard=true"], 0);
    let config = step(&s, "modprobe-config").1;
    has(
        config,
        "8139cp cannot load at all (`install 8139cp /bin/false`: not by name, alias or as a dependency)",
    );
    has(config, "`modprobe -n -v 8139cp` (kmod): install /bin/false");
    // Switching back to the soft blacklist rewrites the same file; revert restores nothing.
    let (soft, _) = at(&dir, &["apply", "rtl8139"], 0);
    assert_diff_has(&soft, &["-install 8139cp /bin/false", "+blacklist 8139cp"]);
    at(&dir, &["revert", "rtl8139"], 0);
    assert!(!dir.join("etc/modprobe.d/hostkit-rtl8139.conf").exists());
}

#[test]
fn rtl8139_refuses_to_block_8139cp_for_a_genuine_8139c_plus() {
    let dir = TestDir::new();
    pci(&dir, "0000:03:00.0", "0x10ec", "0x8139", "0x20");
    let before = snapshot(dir.path());
    let s = statuses(&dir, &["rtl8139"], 0);
    expect_step(
        &s,
        "blacklist",
        "not applicable",
        "refused: a genuine RTL8139C+ is present (0000:03:00.0 10ec:8139 revision 0x20 (a genuine 8139C+: 8139cp is its driver; no driver bound)); blocking 8139cp would leave it without its proper driver (--set blacklist=always to apply anyway)",
    );
    let (stdout, _) = at(&dir, &["apply", "rtl8139"], 0);
    assert_eq!(stdout, "");
    same_tree(
        &snapshot(dir.path()),
        &before,
        "a refused blacklist wrote something",
    );
    let (forced, _) = at(
        &dir,
        &["apply", "rtl8139", "--dry-run", "--set", "blacklist=always"],
        0,
    );
    assert_eq!(forced, BLACKLIST);
}

#[test]
fn rtl8139_same_named_file_in_etc_hides_the_vendors_and_kmod_agrees() {
    let dir = TestDir::new();
    dir.write("lib/modprobe.d/rtl.conf", "blacklist 8139cp\n");
    dir.write("etc/modprobe.d/rtl.conf", "# emptied by the admin\n");
    let s = statuses(&dir, &["rtl8139"], 1);
    assert_eq!(
        step(&s, "modprobe-config").1.lines().collect::<Vec<_>>(),
        [
            "8139cp is not blocked: both drivers claim 10ec:8139 and whichever loads first binds the card",
            "etc/modprobe.d/rtl.conf overrides lib/modprobe.d/rtl.conf",
            "read: /etc/modprobe.d, /lib/modprobe.d",
            "confirmed by the real `modprobe -C DIR… -c` (kmod)",
        ]
    );
    let (_, config) = kmod(&dir, &["-c"]);
    assert!(!config.contains("8139cp"), "{config}");
}

#[test]
fn rtl8139_legacy_modutils_pcimapfile_and_pcimap_order() {
    let dir = TestDir::new();
    dir.write(
        "etc/modules.conf",
        "alias eth0 8139too\npcimapfile=/tmp/modules.pcimap\n",
    );
    let row = |m: &str, v: &str, d: &str| {
        format!("{m:<20} 0x0000{v} 0x0000{d} 0xffffffff 0xffffffff 0x00000000 0x00000000 0x0\n")
    };
    dir.write(
        "lib/modules/2.4.18-3/modules.pcimap",
        format!(
            "# pci module         vendor     device     subvendor  subdevice  class      class_mask driver_data\n{}{}{}",
            row("8139cp", "10ec", "8139"),
            row("3c59x", "10b7", "5900"),
            row("8139too", "10ec", "8139")
        ),
    );
    let s = statuses(&dir, &["rtl8139"], 1);
    let (status, reason) = step(&s, "legacy-pcimap");
    assert_eq!(status, "manual");
    assert_eq!(
        reason.lines().take(2).collect::<Vec<_>>(),
        [
            "lib/modules/2.4.18-3/modules.pcimap: 8139cp (line 2), then 8139too (line 4)",
            "etc/modules.conf:2: pcimapfile=/tmp/modules.pcimap",
        ]
    );
    let diff = "\
--- a/etc/modules.conf
+++ b/etc/modules.conf
@@ -1,2 +1,2 @@
 alias eth0 8139too
-pcimapfile=/tmp/modules.pcimap
+pcimapfile=/etc/modules.pcimap
";
    let (dry, _) = at(&dir, &["apply", "rtl8139", "--dry-run"], 0);
    assert!(dry.ends_with(diff), "{dry}");
    assert!(dry.starts_with(BLACKLIST), "{dry}");
    let before = snapshot(dir.path());
    at(&dir, &["apply", "rtl8139"], 0);
    assert_eq!(
        dir.read("etc/modules.conf"),
        "alias eth0 8139too\npcimapfile=/etc/modules.pcimap\n"
    );
    at(&dir, &["revert", "rtl8139"], 0);
    same_tree(
        &snapshot(dir.path()),
        &before,
        "revert did not restore the legacy tree",
    );
}

#[test]
fn rtl8139_bad_parameters_are_errors() {
    let dir = TestDir::new();
    let (_, stderr) = at(&dir, &["apply", "rtl8139", "--set", "hard=maybe"], 2);
    has(
        &stderr,
        "error: recipe rtl8139: bad value `maybe` for parameter `hard`; allowed: false, true",
    );
    let (_, stderr) = at(&dir, &["check", "rtl8139", "--set", "soft"], 2);
    has(&stderr, "`--set soft`: expected KEY=VALUE");
}

const UDEV_RULE: &str = "\
--- /dev/null
+++ b/etc/udev/rules.d/99-hostkit-udisks2.rules
@@ -0,0 +1,2 @@
+# Managed by hostkit (recipe udisks2-media): udisks2 mounts filesystems under /media, shared.
+ENV{ID_FS_USAGE}==\"filesystem|other|crypto\", ENV{UDISKS_FILESYSTEM_SHARED}=\"1\"
# not run under --root, run inside the image: udevadm control --reload
";

#[test]
fn udisks2_rule_cycle_under_root_reports_the_reload() {
    let dir = TestDir::new();
    dir.write("etc/os-release", "NAME=\"Fedora Linux\"\nID=fedora\n");
    dir.write("usr/lib/udev/rules.d/80-udisks2.rules", "# vendor rules\n");
    // The reload is only reported under --root (udev reads the rules when the image boots);
    // the file is in place, so apply exits 0.
    cycle(&dir, &["udisks2-media"], UDEV_RULE);
    at(&dir, &["apply", "udisks2-media"], 0);
    let s = statuses(&dir, &["udisks2-media"], 0);
    assert_eq!(
        step(&s, "rules-effective").1,
        "UDISKS_FILESYSTEM_SHARED=1 set by etc/udev/rules.d/99-hostkit-udisks2.rules:2 (the last assignment in udev's order): udisks2 mounts those filesystems under /media/LABEL, shared (read /etc/udev/rules.d, /usr/lib/udev/rules.d)"
    );
    let (_, stderr) = at(&dir, &["revert", "udisks2-media"], 0);
    has(&stderr, "reverted: shared-rule");
}

#[test]
fn udisks2_on_debian_is_already_under_media() {
    let dir = TestDir::new();
    dir.write(
        "etc/os-release",
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n",
    );
    dpkg_status(&dir, &[("udisks2", "2.9.4-4+deb12u2")]);
    let s = statuses(&dir, &["udisks2-media"], 0);
    expect_step(
        &s,
        "udisks2",
        "ok",
        "udisks2 2.9.4-4+deb12u2 is installed; Debian GNU/Linux 12 (bookworm) builds udisks2 with --enable-fhs-media: it mounts under /media/$USER already",
    );
    expect_step(
        &s,
        "shared-rule",
        "not applicable",
        "Debian GNU/Linux 12 (bookworm)'s udisks2 already mounts under /media/$USER (built with --enable-fhs-media); the rule would move mounts to /media/LABEL, shared by all users (--set shared=always to apply anyway)",
    );
    let (dry, _) = at(
        &dir,
        &[
            "apply",
            "udisks2-media",
            "--dry-run",
            "--set",
            "shared=always",
        ],
        0,
    );
    assert_eq!(dry, UDEV_RULE);
    // A rule masked in /etc (link to /dev/null) does not count; a later file setting 0 wins.
    std::fs::create_dir_all(dir.join("etc/udev/rules.d")).expect("mkdir");
    dir.write(
        "lib/udev/rules.d/70-shared.rules",
        "ENV{UDISKS_FILESYSTEM_SHARED}=\"1\"\n",
    );
    std::os::unix::fs::symlink("/dev/null", dir.join("etc/udev/rules.d/70-shared.rules"))
        .expect("symlink");
    dir.write(
        "lib/udev/rules.d/80-unshare.rules",
        "ENV{ID_FS_USAGE}==\"filesystem\", ENV{UDISKS_FILESYSTEM_SHARED}=\"0\"\n",
    );
    let s = statuses(&dir, &["udisks2-media"], 0);
    assert_eq!(
        step(&s, "rules-effective").1,
        "UDISKS_FILESYSTEM_SHARED=0 set last by lib/udev/rules.d/80-unshare.rules:1: mounts stay per user (etc/udev/rules.d/70-shared.rules masks /lib/udev/rules.d/70-shared.rules; read /etc/udev/rules.d, /lib/udev/rules.d)"
    );
}

#[test]
fn check_all_covers_every_recipe_offline_without_errors() {
    let dir = TestDir::new();
    let (stdout, stderr) = at(&dir, &["check", "all", "--scope", "system"], 1);
    for recipe in [
        "gtk-legacy",
        "ngroups",
        "procps",
        "qt-gtk",
        "rtl8139",
        "udisks2-media",
    ] {
        has(&stdout, &format!("  => {recipe}: "));
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn dry_runs_show_the_drop_ins_and_write_nothing() {
    for (recipe, want) in [("rtl8139", BLACKLIST), ("udisks2-media", UDEV_RULE)] {
        let dir = TestDir::new();
        let before = snapshot(dir.path());
        let out = run(&mut in_root(&dir, &["apply", recipe, "--dry-run"]));
        let (stdout, _) = texts(&out);
        assert_eq!((out.status.code(), stdout.as_str()), (Some(0), want));
        same_tree(&snapshot(dir.path()), &before, "a dry run wrote something");
    }
}

#[test]
fn report_only_recipes_write_nothing_and_bad_values_are_refused() {
    let dir = TestDir::new();
    dpkg_status(&dir, &[("procps", "2:4.0.2-3")]);
    let before = snapshot(dir.path());
    for recipe in ["procps", "ngroups"] {
        let (stdout, stderr) = at(&dir, &["apply", recipe], 0);
        assert_eq!(stdout, "");
        has(&stderr, &format!("{recipe}: nothing to do on this host"));
        at(&dir, &["apply", recipe, "--dry-run"], 0);
        let (_, stderr) = at(&dir, &["revert", recipe], 0);
        has(&stderr, "nothing to revert");
    }
    same_tree(
        &snapshot(dir.path()),
        &before,
        "a report-only recipe wrote something",
    );
    for (args, message) in [
        (
            vec!["check", "udisks2-media", "--set", "shared=sometimes"],
            "error: recipe udisks2-media: bad value `sometimes` for parameter `shared`; allowed: auto, always, never",
        ),
        (
            vec!["check", "procps", "--set", "size=4096"],
            "error: recipe procps: unknown parameter `size`; allowed: none",
        ),
        (
            vec!["apply", "procps", "--set", "size=8192"],
            "hint: `size` is a parameter of the source-tree fix: hostkit apply procps --source DIR --set size=…",
        ),
        (
            vec!["apply", "rtl8139", "--scope", "user"],
            "error: recipe rtl8139 does not support scope `user`; supported: system",
        ),
    ] {
        let (_, stderr) = at(&dir, &args, 2);
        has(&stderr, message);
    }
    let src = fixture("procps", "procps-3.2.8");
    let out = run(hostkit()
        .args(["apply", "procps", "--set", "size=100", "--source"])
        .arg(src.path()));
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    has(&stderr, "size");
}

/// Two stand-in kernel modules (ELF objects with a `.modinfo` alias for 10ec:8139, built with
/// the C compiler) indexed by the real `depmod -b ROOT KVER`; false (test skipped, saying so)
/// when cc or depmod is missing.
fn fake_modules(dir: &TestDir, kver: &str) -> bool {
    let moddir = dir.join(format!(
        "lib/modules/{kver}/kernel/drivers/net/ethernet/realtek"
    ));
    std::fs::create_dir_all(&moddir).expect("mkdir");
    let src = TestDir::new();
    for m in ["8139cp", "8139too"] {
        let c = src.write(
            format!("{m}.c"),
            format!(
                "#define MI(n, s) __attribute__((section(\".modinfo\"), used, aligned(1))) static const char n[] = s;\n\
                 MI(a, \"alias=pci:v000010ECd00008139sv*sd*bc*sc*i*\")\nMI(l, \"license=GPL\")\nMI(n, \"name={m}\")\n\
                 __attribute__((section(\".gnu.linkonce.this_module\"), used)) static const char t[64] = \"{m}\";\n"
            ),
        );
        let ok = Command::new("cc")
            .arg("-c")
            .arg("-o")
            .arg(moddir.join(format!("{m}.ko")))
            .arg(&c)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            crate::util::skip("no C compiler (cc) to build stand-in kernel modules");
            return false;
        }
    }
    let ok = Command::new("depmod")
        .arg("-b")
        .arg(dir.path())
        .arg(kver)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        crate::util::skip("depmod (kmod) failed or is missing");
    }
    ok
}

#[test]
fn rtl8139_kmod_autoload_skips_8139cp_once_blacklisted() {
    let dir = TestDir::new();
    if !fake_modules(&dir, "6.1.0-hk") {
        return;
    }
    pci(&dir, "0000:02:00.0", "0x10ec", "0x8139", "0x10");
    dir.write(
        "sys/bus/pci/devices/0000:02:00.0/modalias",
        "pci:v000010ECd00008139sv00001186sd00001300bc02sc00i00\n",
    );
    let line = |s: &[(String, String, String)]| {
        step(s, "modprobe-config")
            .1
            .lines()
            .last()
            .unwrap_or("")
            .to_string()
    };
    let s = statuses(&dir, &["rtl8139"], 1);
    assert_eq!(
        line(&s),
        "hardware autoload, kernel 6.1.0-hk (`modprobe -n -v pci:v000010ECd00008139sv00001186sd00001300bc02sc00i00`, kmod): 8139cp, 8139too"
    );
    at(&dir, &["apply", "rtl8139"], 0);
    let s = statuses(&dir, &["rtl8139"], 0);
    assert_eq!(
        line(&s),
        "hardware autoload, kernel 6.1.0-hk (`modprobe -n -v pci:v000010ECd00008139sv00001186sd00001300bc02sc00i00`, kmod): 8139too"
    );
    at(&dir, &["revert", "rtl8139"], 0);
}

#[test]
fn udisks2_rule_on_a_live_system_reloads_udev_and_revert_reloads_again() {
    require_mount_ns!();
    // The live paths, in a private mount namespace. udev is not installed here, so a stand-in
    // `udevadm` on PATH records how hostkit calls it.
    let bin = TestDir::new();
    let log = bin.join("udevadm.log");
    let fake = bin.write(
        "udevadm",
        format!("#!/bin/sh\necho \"udevadm $*\" >> {}\n", log.display()),
    );
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let (stdout, stderr) = in_private_mounts(
        r#"
        hk() { "$HK" "$@" --set shared=always; }
        hk apply udisks2-media | grep '^\$'
        cat /etc/udev/rules.d/99-hostkit-udisks2.rules | grep -c UDISKS_FILESYSTEM_SHARED
        hk check udisks2-media >/dev/null && echo "check: 0"
        hk revert udisks2-media | grep '^\$'
    "#,
        Some(bin.path()),
    );
    assert_eq!(
        stdout, "$ udevadm control --reload\n1\ncheck: 0\n$ udevadm control --reload\nidentical\n",
        "stderr:\n{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&log).expect("udevadm log"),
        "udevadm control --reload\nudevadm control --reload\n"
    );
}

/// Runs `body` (sh) in a private mount namespace whose /etc and /var/lib are fresh tmpfs
/// mounts, so the live paths are written and nothing reaches the host (`set -e`: nothing runs
/// unless the mounts succeeded); `$HK` is hostkit, `extra_path` goes first on PATH. Prints
/// "identical" at the end when /etc and /var/lib are back as they were. Returns stdout and
/// stderr, asserting exit 0.
fn in_private_mounts(body: &str, extra_path: Option<&std::path::Path>) -> (String, String) {
    let script = format!(
        r#"
        set -e
        mount -t tmpfs tmpfs /etc
        mount -t tmpfs tmpfs /var/lib
        tree() {{ find /etc /var/lib -type f -exec sha256sum {{}} + | sort -k2; }}
        tree > "$TMPDIR/before"
        {body}
        tree | diff "$TMPDIR/before" - && echo "identical"
    "#
    );
    let tmp = TestDir::new();
    let mut path = std::env::var("PATH").unwrap_or_default();
    if let Some(extra) = extra_path {
        path = format!("{}:{path}", extra.display());
    }
    let out = run(Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .env("HK", crate::util::hostkit_bin())
        .env("PATH", path)
        .env("TMPDIR", tmp.path()));
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    (stdout, stderr)
}

#[test]
fn rtl8139_on_a_live_system_writes_the_drop_in_that_the_real_modprobe_reads() {
    require_mount_ns!();
    let (stdout, stderr) = in_private_mounts(
        r#"
        "$HK" apply rtl8139 >/dev/null
        modprobe -c | grep -x 'blacklist 8139cp'
        "$HK" check rtl8139 --format json | grep -c 'confirmed by the real'
        "$HK" check rtl8139 >/dev/null && echo "check: 0"
        "$HK" revert rtl8139 >/dev/null
        modprobe -c | grep -c 8139cp || true
    "#,
        None,
    );
    assert_eq!(
        stdout, "blacklist 8139cp\n1\ncheck: 0\n0\nidentical\n",
        "stderr:\n{stderr}"
    );
}

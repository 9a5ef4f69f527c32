//! `check all` checks its recipes at the same time; what it prints, and its exit code, are
//! exactly those of checking them one after the other (`HOSTKIT_SEQUENTIAL=1`, honoured by
//! test builds), and of checking each recipe on its own.

use std::path::Path;
use std::process::Command;

use crate::recipes::{DEBIAN_12, dpkg_status, hk, in_root};
use crate::util::{TestDir, run, texts};

/// stdout, stderr and the exit code of `cmd`, run at the same time as the recipes are
/// checked (the default) and one recipe after the other.
fn both_ways(mut cmd: impl FnMut() -> Command) -> [(String, String, Option<i32>); 2] {
    [false, true].map(|sequential| {
        let mut c = cmd();
        if sequential {
            c.env("HOSTKIT_SEQUENTIAL", "1");
        } else {
            c.env_remove("HOSTKIT_SEQUENTIAL");
        }
        let out = run(&mut c);
        let (stdout, stderr) = texts(&out);
        (stdout, stderr, out.status.code())
    })
}

#[track_caller]
fn same(what: &str, [concurrent, sequential]: [(String, String, Option<i32>); 2]) -> String {
    assert_eq!(
        concurrent, sequential,
        "{what}: concurrent (left) and sequential (right) differ"
    );
    concurrent.0
}

/// An image with something to say for every recipe: packages, a home, groups, a modprobe.d.
fn image() -> TestDir {
    let dir = TestDir::new();
    let extra: &[(&str, &str)] = &[("procps", "2:4.0.2-3"), ("udisks2", "2.9.4-4")];
    dpkg_status(&dir, &[DEBIAN_12, extra].concat());
    dir.write("home/u/.profile", "# profile\n");
    dir.write(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\nu:x:1000:1000::/home/u:/bin/sh\n",
    );
    dir.write("etc/group", "root:x:0:\nu:x:1000:\nwheel:x:10:u\n");
    dir.write("proc/sys/kernel/ngroups_max", "65536\n");
    dir.write("etc/modprobe.d/local.conf", "blacklist 8139too\n");
    dir.write("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n");
    dir
}

#[test]
fn check_all_prints_what_checking_one_recipe_after_the_other_prints() {
    let dir = image();
    for extra in [
        &[][..],
        &["--format", "json"],
        &["--scope", "system"],
        &["--scope", "system", "--format", "json"],
        &["-v"],
        &["--set", "hard=true"],
    ] {
        let args = [&["check", "all"][..], extra].concat();
        let out = same(&format!("{args:?}"), both_ways(|| in_root(&dir, &args)));
        assert!(out.contains("rtl8139"), "{out}");
    }
    // A recipe that cannot be checked: reported in its place, the others still checked.
    let broken = image();
    std::fs::remove_file(broken.join("home/u/.profile")).unwrap();
    std::fs::create_dir_all(broken.join("home/u/.profile")).unwrap();
    for format in ["text", "json"] {
        let runs = both_ways(|| in_root(&broken, &["check", "all", "--format", format]));
        assert_eq!(runs[0].2, Some(2), "{}", runs[0].1);
        assert!(
            runs[0].1.contains("could not check gtk-legacy"),
            "{}",
            runs[0].1
        );
        same(format, runs);
    }
}

#[test]
fn check_all_is_each_recipe_checked_on_its_own_in_catalog_order() {
    let dir = image();
    let (all, _) = texts(&run(&mut in_root(
        &dir,
        &["check", "all", "--format", "json"],
    )));
    let all: serde_json::Value = serde_json::from_str(&all).expect("JSON");
    let names: Vec<String> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["recipe"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 6, "{names:?}");
    let mut text = String::new();
    for (i, name) in names.iter().enumerate() {
        let (one, _) = texts(&run(&mut in_root(
            &dir,
            &["check", name, "--format", "json"],
        )));
        let one: serde_json::Value = serde_json::from_str(&one).expect("JSON");
        assert_eq!(all[i], one, "{name}");
        text.push_str(&texts(&run(&mut in_root(&dir, &["check", name]))).0);
    }
    let (all_text, _) = texts(&run(&mut in_root(&dir, &["check", "all"])));
    assert_eq!(all_text, text);
}

#[test]
fn check_all_on_this_host_prints_what_one_recipe_after_the_other_prints() {
    // The live system: gsettings, dpkg, and as root the live probes (setpriv, ps, dmesg,
    // modprobe -c), each recipe's at the same time. HOME is a fresh directory.
    let home = TestDir::new();
    for extra in [&[][..], &["--format", "json"]] {
        let args = [&["check", "all"][..], extra].concat();
        let out = same(
            &format!("{args:?}"),
            both_ways(|| {
                let mut cmd = hk(home.path());
                cmd.args(&args);
                cmd
            }),
        );
        assert!(out.contains("udisks2-media"), "{out}");
    }
    assert!(!Path::new(&home.join(".profile")).exists());
}

//! `hostkit tun up --config FILE` and `hostkit tun config`: the options of `tun up` in a TOML
//! file — every one of them, checked with the command line's errors at the file's line and
//! column, overridden by the command line, read back as printed, refused when someone else could
//! have written it — and a real tunnel from one.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::tun::{relayed_packets, snapshot};
use crate::util::{Background, NetNs, TestDir, hostkit, run, run_ok, run_with_timeout, texts};

/// `hostkit tun config ARGS…` with no run directory from the environment; (code, stdout,
/// stderr).
fn config(args: &[&str]) -> (Option<i32>, String, String) {
    let out = run_with_timeout(
        hostkit()
            .env_remove("HOSTKIT_RUN_DIR")
            .args(["tun", "config"])
            .args(args),
        30,
    );
    let (o, e) = texts(&out);
    assert!(!e.contains("panicked"), "{e}");
    (out.status.code(), o, e)
}

/// A file mode 0644 in a directory mode 0700 (both the test's: trusted).
fn write_config(dir: &TestDir, name: &str, text: &str) -> String {
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = dir.write(name, text);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path.display().to_string()
}

/// The long options `hostkit tun up --help` lists.
fn up_long_options() -> Vec<String> {
    let help = run_ok(hostkit().args(["tun", "up", "--help"]));
    let mut longs: Vec<String> = help
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("--") || l.starts_with("-v") || l.starts_with("-q"))
        .filter_map(|l| {
            let at = l.find("--")?;
            let name: String = l[at + 2..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            Some(name)
        })
        .collect();
    longs.dedup();
    longs
}

/// Every long option of `tun up` has a key in the printed configuration, but the global ones,
/// the file itself and `--dry-run`: read from the real binary's help, not from the code.
#[test]
fn every_option_of_up_has_a_key() {
    let (code, out, err) = config(&["--print"]);
    assert_eq!(code, Some(0), "{err}");
    let longs = up_long_options();
    assert!(longs.len() > 20, "{longs:?}");
    for long in longs {
        if [
            "help", "version", "verbose", "quiet", "color", "config", "dry-run",
        ]
        .contains(&long.as_str())
        {
            continue;
        }
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{long} = "))
                    || l.starts_with(&format!("# {long} = "))),
            "--{long} has no key in `tun config --print`:\n{out}"
        );
    }
}

/// What `--print` writes, `--config` reads back to the same configuration; defaults stay
/// comments, given options become keys.
#[test]
fn print_then_config_is_the_same_configuration() {
    let dir = TestDir::new();
    let args = [
        "--dev0",
        "a0",
        "--dev1",
        "a1",
        "--addr0",
        "10.9.0.1",
        "--addr0",
        "fd09::1",
        "--addr1",
        "10.9.0.2",
        "--addr1",
        "fd09::2",
        "--table",
        "42",
        "--mtu",
        "1400",
        "--netns",
        "somewhere",
        "--run-dir",
        "/run/hostkit-test",
        "--rules",
        "first-only",
        "--no-nonlocal-bind",
        "--engine",
        "simple",
        "--nice",
        "-5",
        "--coalesce-us",
        "0",
        "--txqueuelen",
        "700",
        "--pcap",
        "/tmp/it's \"x\".pcapng",
        "--pcap-raw",
        "--pcap-max",
        "5",
        "--pcap-files",
        "3",
        "--impair",
        "a0->a1: delay 10ms loss 1%",
        "--impair",
        "a1->a0: duplicate 2%",
        "--seed",
        "7",
        "--print",
    ];
    let (code, first, err) = config(&args);
    assert_eq!(code, Some(0), "{err}");
    for line in [
        "dev0 = \"a0\"",
        "addr0 = [\"10.9.0.1\", \"fd09::1\"]",
        "table = 42",
        "nice = -5",
        "coalesce-us = 0",
        "no-nonlocal-bind = true",
        "pcap = \"/tmp/it's \\\"x\\\".pcapng\"",
        "impair = [\"a0->a1: delay 10ms loss 1%\", \"a1->a0: duplicate 2%\"]",
        "seed = 7",
        "# no-routing = false",
        "# queues = N",
    ] {
        assert!(first.lines().any(|l| l == line), "no `{line}` in:\n{first}");
    }
    let file = write_config(&dir, "t.toml", &first);
    let (code, second, err) = config(&["--config", &file, "--print"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(first, second, "the configuration changed on the way back");
    // And once more, from the defaults only.
    let (_, defaults, _) = config(&["--print"]);
    let file = write_config(&dir, "d.toml", &defaults);
    let (code, again, err) = config(&["--config", &file, "--print"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(defaults, again);
    assert!(
        !defaults
            .lines()
            .any(|l| !l.is_empty() && !l.starts_with('#')),
        "{defaults}"
    );
}

/// A bad value gets the command line's message, at the file, line and column of the value;
/// an unknown key lists the allowed ones.
#[test]
fn errors_name_the_file_line_and_column() {
    let dir = TestDir::new();
    let cases: &[(&str, &str, &[&str], &str)] = &[
        // (file, its error's place, the same on the command line, the message)
        (
            "table = 13\nnice = 300\n",
            ":2:8: ",
            &["--nice", "300"],
            "invalid value '300' for '--nice <NICE>': 300 is not in -20..=19",
        ),
        (
            "# reserved\ntable = 254\n",
            ":2:9: ",
            &["--table", "254"],
            "table 254 is reserved",
        ),
        (
            "engine = \"turbo\"\n",
            ":1:10: ",
            &["--engine", "turbo"],
            "invalid value 'turbo' for '--engine <ENGINE>'",
        ),
        (
            "addr0 = [\"10.0.0.1\", \"127.0.0.1\"]\naddr1 = [\"10.0.0.2\"]\n",
            ":1:22: ",
            &[
                "--addr0",
                "10.0.0.1",
                "--addr0",
                "127.0.0.1",
                "--addr1",
                "10.0.0.2",
            ],
            "address 127.0.0.1 cannot be a tunnel end",
        ),
        (
            "impair = \"delay 10\"\n",
            ":1:10: ",
            &["--impair", "delay 10"],
            "--impair: ",
        ),
        (
            "engine = \"simple\"\n\nqueues = 2\n",
            ":3:10: ",
            &["--engine", "simple", "--queues", "2"],
            "--queues applies to the fast engine only",
        ),
        (
            "pcap-raw = true\n",
            ":1:12: ",
            &["--pcap-raw"],
            "the following required arguments were not provided",
        ),
    ];
    for (i, (text, place, cli, message)) in cases.iter().enumerate() {
        let file = write_config(&dir, &format!("bad{i}.toml"), text);
        let (code, _, err) = config(&["--config", &file]);
        assert_eq!(code, Some(2), "{text}: {err}");
        let expected = format!("error: {file}{place}");
        assert!(
            err.starts_with(&expected) && err.contains(message),
            "{text}: expected `{expected}…{message}…`, got:\n{err}"
        );
        // The same words as on the command line.
        let (code, _, cli_err) = config(cli);
        assert_eq!(code, Some(2), "{cli:?}: {cli_err}");
        let words = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
        let from_file = err.trim_start_matches(&expected).lines().next().unwrap();
        assert!(
            words(&cli_err).contains(from_file),
            "{cli:?}: the command line says:\n{cli_err}\nthe file says:\n{from_file}"
        );
    }
    // Unknown keys: refused, naming the allowed ones.
    let file = write_config(&dir, "unknown.toml", "table = 13\n  tabel = 14\n");
    let (code, _, err) = config(&["--config", &file]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.starts_with(&format!(
            "error: {file}:2:3: unknown key `tabel`; allowed keys"
        )),
        "{err}"
    );
    for key in ["dev0", "table", "impair", "coalesce-us", "run-dir"] {
        assert!(
            err.contains(key),
            "{key} not among the allowed keys:\n{err}"
        );
    }
    // The wrong type, and a syntax error.
    let file = write_config(&dir, "type.toml", "mtu = \"1400\"\n");
    let (code, _, err) = config(&["--config", &file]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.starts_with(&format!("error: {file}:1:7: `mtu`: expected an integer")),
        "{err}"
    );
    let file = write_config(&dir, "syntax.toml", "mtu = 1400\ntable =\n");
    let (code, _, err) = config(&["--config", &file]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.starts_with(&format!("error: {file}:2:8: TOML syntax error")),
        "{err}"
    );
    // `tun up` says the same before it touches anything.
    let file = write_config(&dir, "up.toml", "nice = 300\n");
    let out = run_with_timeout(
        hostkit()
            .args(["tun", "up", "--dry-run", "--config"])
            .arg(&file),
        30,
    );
    let (_, err) = texts(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with(&format!("error: {file}:1:8: invalid value '300'")),
        "{err}"
    );
}

/// The command line (and the environment) override the file, list options whole.
#[test]
fn the_command_line_overrides_the_file() {
    let dir = TestDir::new();
    let file = write_config(
        &dir,
        "o.toml",
        "dev0 = \"f0\"\ntable = 254\nimpair = [\"loss 1%\", \"delay 5ms\"]\nrun-dir = \"/run/from-file\"\nengine = \"simple\"\n",
    );
    // table 254 in the file is wrong, but overridden.
    let out = run_with_timeout(
        hostkit()
            .env("HOSTKIT_RUN_DIR", "/run/from-env")
            .args(["tun", "config", "--print", "--config", &file])
            .args(["--table", "14", "--impair", "loss 2%", "--dev1", "c1"]),
        30,
    );
    let (printed, err) = texts(&out);
    assert!(out.status.success(), "{err}");
    for line in [
        "dev0 = \"f0\"",
        "dev1 = \"c1\"",
        "table = 14",
        "impair = [\"loss 2%\"]",
        "run-dir = \"/run/from-env\"",
        "engine = \"simple\"",
    ] {
        assert!(
            printed.lines().any(|l| l == line),
            "no `{line}` in:\n{printed}"
        );
    }
    // Without the override the file's value is refused, at its place.
    let (code, _, err) = config(&["--config", &file]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains(&format!("{file}:2:9: table 254 is reserved")),
        "{err}"
    );
    // An option given on the command line that conflicts with the file: at the file's key.
    let (code, _, err) = config(&["--config", &file, "--table", "14", "--queues", "2"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains(&format!(
            "{file}:5:10: --queues applies to the fast engine only"
        )),
        "{err}"
    );
}

/// The attack: the configuration is an instruction hostkit (root) obeys, so a file another
/// user could have written is refused — group-writable, another user's, in a directory others
/// may write, a FIFO (refused at once, never waited on) — exit 2, naming it, before anything
/// changes.
#[test]
fn an_untrusted_configuration_is_refused() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let before = snapshot(&ns);
    let up = |file: &Path| {
        let out = run_with_timeout(
            hostkit()
                .args(["tun", "up", "--netns", ns.name(), "--config"])
                .arg(file)
                .env("HOSTKIT_RUN_DIR", dir.join("run")),
            30,
        );
        let (o, e) = texts(&out);
        assert!(!e.contains("panicked"), "{e}");
        (out.status.code(), o, e)
    };
    let text = "engine = \"simple\"\n";
    let file = write_config(&dir, "a.toml", text);
    let path = Path::new(&file);

    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o664)).unwrap();
    let (code, _, err) = up(path);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&file) && err.contains("mode 664 lets group or others change it"),
        "{err}"
    );

    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let (code, _, err) = up(path);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&file) && err.contains("owned by uid 65534"),
        "{err}"
    );

    // A good file in a directory anyone may write to (not sticky): refused.
    let open = dir.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let inside = open.join("b.toml");
    std::fs::write(&inside, text).unwrap();
    std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = up(&inside);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&open.display().to_string()) && err.contains("mode 777"),
        "{err}"
    );

    let fifo = dir.join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let started = Instant::now();
    let (code, _, err) = up(&fifo);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not a regular file (a FIFO)"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // `tun down` and `tun config` read it the same way.
    let (code, _, err) = config(&["--config", &file]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("owned by uid 65534"), "{err}");
    let out = run_with_timeout(
        hostkit()
            .args(["tun", "down", "--netns", ns.name(), "--config"])
            .arg(&fifo),
        30,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(texts(&out).1.contains("a FIFO"));

    assert_eq!(snapshot(&ns), before, "something changed");
}

/// A real tunnel from a file alone: every setting in it (namespace, run directory, devices,
/// addresses, engine), a ping across the relay; after a SIGKILL, `tun down --config` (the
/// service's ExecStopPost) removes what was left.
#[test]
fn up_with_a_config_file_carries_a_ping() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let before = snapshot(&ns);
    let run_dir = dir.join("run");
    let file = write_config(
        &dir,
        "lab.toml",
        &format!(
            "# a tunnel of its own\nnetns = \"{}\"\nrun-dir = \"{}\"\ndev0 = \"cf0\"\ndev1 = \"cf1\"\n\
             addr0 = [\"10.7.0.1\", \"fd07::1\"]\naddr1 = [\"10.7.0.2\", \"fd07::2\"]\n\
             table = 77\nengine = \"simple\"\n",
            ns.name(),
            run_dir.display()
        ),
    );
    let start = || {
        let mut cmd = hostkit();
        cmd.env_remove("HOSTKIT_RUN_DIR")
            .env_remove("NOTIFY_SOCKET")
            .args(["tun", "up", "--config", &file]);
        Background::start(
            &mut cmd,
            &dir,
            "up",
            "relay running",
            Duration::from_secs(15),
        )
    };
    let up = start();
    let rules = ns.ip(&["rule"]);
    assert!(
        rules.contains("iif cf0 lookup 77") && rules.contains("iif cf1 lookup 77"),
        "{rules}"
    );
    run_ok(&mut ns.exec(["ping", "-c", "2", "-W", "2", "10.7.0.2"]));
    run_ok(&mut ns.exec(["ping", "-6", "-c", "2", "-W", "2", "fd07::2"]));
    // SIGTERM, a bounded wait, exit 0.
    let (stdout, _) = up.stop();
    assert!(relayed_packets(&stdout, "cf0", "cf1") >= 4, "{stdout}");
    assert_eq!(snapshot(&ns), before);

    // Killed: its rules stay; `tun down --config` finds them by the file's names and place.
    drop(start()); // SIGKILL
    let rules = ns.ip(&["rule"]);
    assert!(rules.contains("iif cf0 [detached] lookup 77"), "{rules}");
    let out = run(Command::new(crate::util::hostkit_bin())
        .env_remove("HOSTKIT_RUN_DIR")
        .args(["tun", "down", "--config", &file]));
    let (o, e) = texts(&out);
    assert!(out.status.success(), "{o}{e}");
    assert!(o.contains("rule iif cf0 lookup 77"), "{o}");
    assert_eq!(snapshot(&ns), before);
    let out = run(hostkit()
        .env_remove("HOSTKIT_RUN_DIR")
        .args(["tun", "down", "--config", &file]));
    assert!(out.status.success());
    assert!(texts(&out).0.contains("nothing to remove"));
}

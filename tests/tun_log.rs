//! What `-v`/`-vv` show of the tunnel: hostkit's own changes, one line each, in `ip`'s words.

use crate::tun::Up;
use crate::util::{NetNs, TestDir};

#[test]
fn vv_logs_hostkits_own_changes_and_not_the_netlink_librarys_internals() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let up = Up::start(&ns, &dir, "fast", &["-vv"], &[]);
    let stderr = up.stderr();
    let before: Vec<&str> = stderr
        .lines()
        .take_while(|l| !l.starts_with("relay running"))
        .collect();
    for change in [
        "netlink: add address 10.0.0.1 peer 10.0.0.2 dev tun0",
        "netlink: add route local 10.0.0.1 dev tun0 table 13",
        "netlink: add IPv4 rule iif tun1 lookup 13",
        "sysctl: net.ipv4.ip_nonlocal_bind=1",
    ] {
        assert!(
            before.iter().any(|l| l.starts_with(change)),
            "no `{change}` in:\n{stderr}"
        );
    }
    // One line per change, not the ~1,900 lines of netlink library internals -vv used to give.
    assert!(before.len() < 40, "{} lines:\n{stderr}", before.len());
    up.stop(nix::sys::signal::Signal::SIGTERM);
}

//! hostkit's integration tests: one binary, each module a feature; every test runs the real
//! `hostkit` binary against real kernel interfaces or temporary directories.

#[macro_use]
mod util;

mod check_all;
mod cli;
mod desktop;
mod docs;
mod fuzz;
mod patch;
mod pcapng;
#[macro_use]
mod recipes;
mod security;
mod sysrecipes;
#[macro_use]
mod tun;
mod tun_coexist;
mod tun_demo;
mod tun_garbage;
mod tun_ipv6;
mod tun_log;
mod tun_trust;
mod tun_watch;

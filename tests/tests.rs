//! hostkit's integration tests: one binary, each module a feature; every test runs the real
//! `hostkit` binary against real kernel interfaces or temporary directories.

#[macro_use]
mod util;

mod desktop;
mod patch;
#[macro_use]
mod recipes;
mod security;
mod sysrecipes;
mod tun;

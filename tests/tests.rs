//! hostkit's integration tests: one binary, each module a feature; every test runs the real
//! `hostkit` binary against real kernel interfaces or temporary directories.

#[macro_use]
mod util;

mod ansible;
mod check_all;
mod cli;
mod deb;
mod desktop;
mod docs;
mod fuzz;
mod json;
mod lab_examples;
mod patch;
mod pcapng;
#[macro_use]
mod recipes;
mod security;
mod sysrecipes;
#[macro_use]
mod tun;
mod tun_coexist;
mod tun_config;
mod tun_control;
mod tun_demo;
mod tun_garbage;
mod tun_ipv6;
mod tun_lab;
mod tun_log;
mod tun_processor;
mod tun_service;
mod tun_tap;
mod tun_trust;
mod tun_watch;

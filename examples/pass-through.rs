//! The smallest program built on the relay: one stage that lets every packet through.
//!
//! It shows the skeleton every other example grows from — a [`Processor`] with a name and a
//! `process` that answers [`Verdict::Forward`], handed to
//! `hostkit::tunnel::Relay::builder().processor(…).run()`, which runs exactly what
//! `hostkit tun up` runs (same options, setup, routing, watcher, teardown), with the stage on
//! the relay's path. The pipeline counts packets and bytes for every stage, so the final report
//! (on stdout, after SIGTERM or Ctrl-C) lists `pass-through tun0 -> tun1: N packets, …`. The
//! benchmark uses it for its "no-op processor" row: the cost of having a stage at all. It does
//! not ask for wire-sized packets, so GSO super-packets cross it whole.
//!
//! Run it (as root) in a namespace of its own, then ping across the tunnel:
//!
//! ```text
//! ip netns add lab
//! cargo run --release --example pass-through -- --netns lab
//! ip netns exec lab ping -c 3 10.0.0.2      # in another terminal
//! ```
//!
//! Every `hostkit tun up` option works (`--engine simple`, `--pcap FILE`, `--impair '…'`,
//! `--processor-filter '…'`, `-v`, …); stop it with Ctrl-C or SIGTERM.

use std::process::ExitCode;

use hostkit_tun::{Ctx, Packet, Processor, Verdict};

/// Forwards every packet unchanged.
struct PassThrough;

impl Processor for PassThrough {
    fn name(&self) -> &str {
        "pass-through"
    }

    fn describe(&self) -> String {
        "forwards every packet unchanged".into()
    }

    fn process(&mut self, _packet: &mut Packet<'_>, _ctx: &mut Ctx<'_>) -> Verdict {
        Verdict::Forward
    }
}

fn main() -> ExitCode {
    hostkit::tunnel::Relay::builder()
        .processor(PassThrough)
        .run()
}

//! The tunnel's host side: a small netlink layer ([`Netlink`], `netlink.rs`), the validated
//! settings and the plan they imply ([`TunnelSpec`], `spec.rs`), the setup that records every
//! change ([`Tunnel`], `setup.rs`), the undo journal and teardown ([`undo`]), the run-state file
//! ([`state`]) and the trust checks of its directory ([`RunDir`], `trust.rs`), the path checks
//! ([`check_paths`], `path.rs`), the watcher that keeps the tunnel while it runs ([`Watcher`],
//! `watch.rs`), the inspection `status` prints ([`inspect`]), sysctls and namespaces
//! ([`netns`]).
#![deny(missing_docs)]

pub mod inspect;
mod netlink;
pub mod netns;
mod path;
mod setup;
mod spec;
pub mod state;
mod sysctl;
mod trust;
pub mod undo;
mod watch;

pub use netlink::{
    AddrSummary, Family, LinkCounters, LinkInfoSummary, Netlink, NetlinkError, RouteSummary,
    RuleSummary, TunInfo,
};
pub use path::{PathCheck, check_paths};
pub use setup::{FailedSetup, Journal, Neighbours, SetupError, Tunnel, check_existing};
pub use spec::{
    DEFAULT_DEVICES, DEFAULT_TABLE, Endpoint, MAX_TXQUEUELEN, MacAddr, MacError, RuleSides,
    SpecError, SpecInput, Step, TunnelSpec,
};
pub use state::{StateFile, TunnelState};
pub use trust::{RunDir, TrustError, check_socket, trusted_uid};
pub use undo::{Outcome, TeardownItem, Undo};
pub use watch::{Repair, WatchError, Watcher};

//! The tunnel's host side: a small netlink layer ([`netlink`]), the validated settings and the
//! plan they imply ([`spec`]), the setup that records every change ([`setup`]), the undo
//! journal and teardown ([`undo`]), the run-state file ([`state`]), the watcher that keeps the
//! tunnel while it runs ([`watch`]), sysctls and namespaces.
#![deny(missing_docs)]

pub mod inspect;
pub mod netlink;
pub mod netns;
pub mod path;
pub mod setup;
pub mod spec;
pub mod state;
pub mod sysctl;
pub mod trust;
pub mod undo;
pub mod watch;

pub use netlink::{Family, Netlink, NetlinkError};
pub use setup::{FailedSetup, Neighbours, SetupError, Tunnel};
pub use spec::{SpecError, SpecInput, Step, TunnelSpec};
pub use undo::{Outcome, TeardownItem, Undo};

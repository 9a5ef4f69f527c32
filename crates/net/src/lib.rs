//! The netlink layer and the routing plan for hostkit's same-host tunnel.
#![deny(missing_docs)]

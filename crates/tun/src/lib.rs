//! TUN devices and the packet relay between two of them.
#![deny(missing_docs)]

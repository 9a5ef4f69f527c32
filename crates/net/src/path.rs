//! The promise of a tunnel, checked the way the kernel sees it: `route get` of each peer must
//! name this side's device and this side's address as the source, for each family.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use crate::netlink::{Family, Netlink, NetlinkError};
use crate::spec::TunnelSpec;

/// What `route get PEER` says, against what the tunnel needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathCheck {
    /// The family.
    pub family: Family,
    /// The destination (a peer address).
    pub to: IpAddr,
    /// The device it must leave through.
    pub expected_dev: String,
    /// The source it must have.
    pub expected_src: IpAddr,
    /// The device the kernel picks (`None`: no route).
    pub dev: Option<String>,
    /// The source the kernel picks.
    pub src: Option<IpAddr>,
    /// Whether the two agree.
    pub ok: bool,
}

impl fmt::Display for PathCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let src = self
            .src
            .map(|s| s.to_string())
            .unwrap_or_else(|| "none".into());
        let dev = self.dev.as_deref().unwrap_or("none");
        if self.ok {
            write!(
                f,
                "{} {}: dev {dev} src {src}: ok",
                self.family.label(),
                self.to
            )
        } else {
            write!(
                f,
                "{} {}: dev {dev} src {src}, but the tunnel needs dev {} src {}",
                self.family.label(),
                self.to,
                self.expected_dev,
                self.expected_src
            )
        }
    }
}

/// `route get` of every peer of the tunnel (side 0's peers through side 0, and the reverse).
pub fn check_paths(nl: &Netlink, spec: &TunnelSpec) -> Result<Vec<PathCheck>, NetlinkError> {
    let links = nl.links()?;
    let mut out = Vec::new();
    for side in 0..2 {
        for (local, peer) in spec.pairs(side) {
            let (oif, src) = nl.route_get(peer)?;
            let dev = oif.and_then(|i| links.iter().find(|l| l.index == i).map(|l| l.name.clone()));
            let expected_dev = spec.ends[side].dev.clone();
            out.push(PathCheck {
                family: Family::of(&peer),
                to: peer,
                ok: dev.as_deref() == Some(expected_dev.as_str()) && src == Some(local),
                expected_dev,
                expected_src: local,
                dev,
                src,
            });
        }
    }
    Ok(out)
}

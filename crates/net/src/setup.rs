//! Establishing the tunnel: devices, addresses, routing rewrite, sysctls — each change
//! recorded (and handed to a journal) the moment it is made, so that any failure, signal or
//! crash can be undone exactly.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hostkit_tun::{DeviceError, DeviceMode, DeviceSetup, PacketIo, TunDevice, TunOptions};

use netlink_packet_route::address::AddressFlags;

use crate::netlink::{ADDR_GEN_MODE_NONE, Netlink, NetlinkError, TABLE_LOCAL};
use crate::spec::{Step, TunnelSpec};
use crate::sysctl;
use crate::undo::{self, TeardownItem, Undo};

/// The `IFA_F_*` flags a user sets (`nodad`, `homeaddress`, `mngtmpaddr`, `noprefixroute`,
/// `autojoin`), kept when an address is added again; the rest is the kernel's state.
const USER_ADDRESS_FLAGS: u32 = 0x02 | 0x10 | 0x100 | 0x200 | 0x400;

/// How long to wait for the kernel to install an address's local route after link up.
const LOCAL_ROUTE_WAIT: Duration = Duration::from_secs(3);

/// Why the tunnel could not be established (everything done so far has been undone).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A device name exists and is not a TUN/TAP device.
    #[error(
        "device {dev:?} exists but is not a {} device (it is {kind}); choose another name",
        mode.label()
    )]
    NotTun {
        /// Device.
        dev: String,
        /// Its kind.
        kind: String,
        /// The mode asked for.
        mode: DeviceMode,
    },
    /// A device name exists as a TUN device where a TAP one is asked for, or the other way.
    #[error(
        "device {dev:?} exists as a {} device, but --mode {} asks for a {} device; choose another name (or delete it: ip tuntap del dev {dev} mode {})",
        is.label(),
        wanted.name(),
        wanted.label(),
        is.name()
    )]
    WrongMode {
        /// Device.
        dev: String,
        /// What it is.
        is: DeviceMode,
        /// What was asked for.
        wanted: DeviceMode,
    },
    /// Opening a device failed.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// A netlink operation failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// A sysctl could not be read or written.
    #[error("{0}")]
    Sysctl(std::io::Error),
    /// The kernel never installed an address's local route.
    #[error("the kernel did not install the local route of {addr} on {dev} within {secs} s")]
    NoLocalRoute {
        /// Device.
        dev: String,
        /// Address.
        addr: IpAddr,
        /// Seconds waited.
        secs: u64,
    },
    /// A failure injected for testing (`HOSTKIT_TUN_FAIL_AT_STEP`, debug builds only).
    #[error("injected failure before step {0} (HOSTKIT_TUN_FAIL_AT_STEP)")]
    Injected(usize),
    /// A tunnel address is already on another interface.
    #[error(
        "address {addr} is already on {dev}; a tunnel end must be an address of its own device ({wanted}) only: remove it there or choose another"
    )]
    AddressInUse {
        /// The address.
        addr: IpAddr,
        /// Where it is.
        dev: String,
        /// The tunnel device it is meant for.
        wanted: String,
    },
    /// The journal could not be written.
    #[error("cannot record the change in the state file: {0}")]
    Journal(std::io::Error),
}

/// A failed setup, with the report of the teardown that followed it.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct FailedSetup {
    /// What failed.
    #[source]
    pub error: SetupError,
    /// How undoing the partial setup went.
    pub teardown: Vec<TeardownItem>,
}

/// Receives the full list of changes after each new one (to persist it).
pub type Journal<'a> = &'a mut dyn FnMut(&[Undo]) -> std::io::Result<()>;

/// What the other tunnels of the namespace share with a new one (from their state files).
#[derive(Debug, Clone, Default)]
pub struct Neighbours {
    /// `(key, value)`: a sysctl's value from before the first tunnel changed it.
    pub sysctls_before: Vec<(String, String)>,
    /// `(key, who)`: sysctls that other running tunnels still need.
    pub keep_sysctls: Vec<(String, String)>,
}

/// An established tunnel: the two open devices and the record of what was changed.
#[derive(Debug)]
pub struct Tunnel {
    /// The queues of the two devices, side 0 and side 1.
    pub devices: [Vec<Arc<TunDevice>>; 2],
    /// The offloads in force on each device.
    pub offloads: [u32; 2],
    /// What was changed, oldest first.
    pub undo: Vec<Undo>,
    /// Whether each device was created (`false`: attached to an existing one).
    pub created: [bool; 2],
    /// The interface index of each device.
    pub ifindex: [u32; 2],
}

/// The tunnel being built, and the journal each recorded change is handed to.
struct Recorder<'j> {
    tunnel: Tunnel,
    journal: Journal<'j>,
    /// The addresses this setup added.
    ours: Vec<IpAddr>,
    /// Sysctl values from before the first tunnel of the namespace (other tunnels' records).
    sysctls_before: Vec<(String, String)>,
}

impl Recorder<'_> {
    fn push(&mut self, u: Undo) -> Result<(), SetupError> {
        self.tunnel.undo.push(u);
        (self.journal)(&self.tunnel.undo).map_err(SetupError::Journal)
    }
}

impl Tunnel {
    /// Carries out `spec` in the current network namespace. On failure everything done so far
    /// is undone and reported.
    pub fn establish(
        nl: &Netlink,
        spec: &TunnelSpec,
        setup: &DeviceSetup,
        neighbours: &Neighbours,
        journal: Journal<'_>,
    ) -> Result<Tunnel, FailedSetup> {
        let mut rec = Recorder {
            tunnel: Tunnel {
                devices: [Vec::new(), Vec::new()],
                offloads: [0, 0],
                undo: Vec::new(),
                created: [false, false],
                ifindex: [0, 0],
            },
            journal,
            ours: Vec::new(),
            sysctls_before: Vec::new(),
        };
        match establish_steps(nl, spec, setup, neighbours, &mut rec) {
            Ok(()) => Ok(rec.tunnel),
            // The journal keeps every item: if part of this teardown fails, `tun down` retries
            // from it (undoing what is already gone is a no-op). The devices stay open until
            // the teardown is done.
            Err(error) => Err(FailedSetup {
                error,
                teardown: rec.tunnel.teardown(nl, &neighbours.keep_sysctls),
            }),
        }
    }

    /// The relay's queue pairs: queue i of one device with queue i of the other.
    pub fn queue_pairs(&self) -> Vec<(Arc<dyn PacketIo>, Arc<dyn PacketIo>)> {
        self.devices[0]
            .iter()
            .zip(&self.devices[1])
            .map(|(a, b)| {
                (
                    a.clone() as Arc<dyn PacketIo>,
                    b.clone() as Arc<dyn PacketIo>,
                )
            })
            .collect()
    }

    /// Undoes everything (newest first) while the devices are still open, then closes them.
    pub fn teardown(self, nl: &Netlink, keep: &undo::KeepSysctls) -> Vec<TeardownItem> {
        // A device's own flags can only be put back once our queues are detached; its
        // address-generation mode after that (the attach briefly brings the carrier up, and
        // with mode `none` that adds no link-local address).
        let (after_close, now): (Vec<Undo>, Vec<Undo>) = self.undo.into_iter().partition(|u| {
            matches!(
                u,
                Undo::RestoreTunSettings { .. } | Undo::RestoreAddrGenMode { .. }
            )
        });
        let mut report = undo::teardown(nl, &now, keep);
        drop(self.devices);
        report.extend(undo::teardown(nl, &after_close, keep));
        report
    }
}

fn establish_steps(
    nl: &Netlink,
    spec: &TunnelSpec,
    setup: &DeviceSetup,
    neighbours: &Neighbours,
    rec: &mut Recorder<'_>,
) -> Result<(), SetupError> {
    // 0. An address that already sits on another interface: refused before anything changes.
    let links = nl.links()?;
    for addr in nl.addresses(None)? {
        for (side, end) in spec.ends.iter().enumerate() {
            let owner = links.iter().find(|l| l.index == addr.index);
            let owner_name = owner.map(|l| l.name.as_str()).unwrap_or("?");
            if end.addrs.contains(&addr.local) && owner_name != spec.devs()[side] {
                return Err(SetupError::AddressInUse {
                    addr: addr.local,
                    dev: owner_name.to_string(),
                    wanted: spec.devs()[side].to_string(),
                });
            }
        }
    }
    rec.sysctls_before = neighbours.sysctls_before.clone();
    // 1. Devices: create, or attach to an existing TUN (TAP) device.
    let mut before = Vec::new();
    for (side, dev) in spec.devs().into_iter().enumerate() {
        let existing = nl.link_by_name(dev)?;
        if let Some(link) = &existing {
            check_existing(dev, link, spec.mode)?;
        }
        rec.tunnel.created[side] = existing.is_none();
        before.push(existing);
    }
    // An existing device that is up gets a link-local address the moment a queue attaches
    // (carrier on): turn address generation off before that.
    let plan = spec.plan(rec.tunnel.created);
    for (side, dev) in spec.devs().into_iter().enumerate() {
        let early = Step::SetAddrGenModeNone {
            dev: dev.to_string(),
        };
        if before[side].is_some() && plan.contains(&early) {
            let index = before[side].as_ref().map(|l| l.index).unwrap_or_default();
            rec.tunnel.ifindex[side] = index;
            run_step(nl, &early, &before, spec, rec)?;
        }
    }
    // An existing device keeps the flags and offloads of its last opener: record its own.
    for (side, dev) in spec.devs().into_iter().enumerate() {
        let Some(prev) = &before[side] else { continue };
        let tun = prev.tun.unwrap_or_default();
        let offloads = (!tun.vnet_hdr).then_some(0);
        if tun.pi || tun.vnet_hdr != setup.vnet_hdr || (!tun.vnet_hdr && !setup.offloads.is_empty())
        {
            rec.push(Undo::RestoreTunSettings {
                dev: dev.to_string(),
                ifindex: prev.index,
                mode: spec.mode,
                pi: tun.pi,
                vnet_hdr: tun.vnet_hdr,
                multi_queue: tun.multi_queue,
                offloads,
            })?;
        }
    }
    for (side, dev) in spec.devs().into_iter().enumerate() {
        let opts = TunOptions {
            name: dev.to_string(),
            mode: spec.mode,
            vnet_hdr: setup.vnet_hdr,
            multi_queue: false,
            offload: 0,
        };
        let queues = TunDevice::open_queues(&opts, setup.queues)?;
        let negotiated = queues[0]
            .negotiate_offload(&setup.offloads)
            .map_err(|source| DeviceError::Io {
                name: dev.to_string(),
                source,
            })?;
        rec.tunnel.offloads[side] = negotiated;
        rec.tunnel.devices[side] = queues.into_iter().map(Arc::new).collect();
        let index = index_of(nl, dev)?;
        if let Some(prev) = &before[side]
            && prev.index != index
        {
            return Err(SetupError::Netlink(NetlinkError {
                op: format!("attach to {dev}"),
                message: format!(
                    "the device was replaced while attaching (interface {} became {index})",
                    prev.index
                ),
                errno: None,
            }));
        }
        rec.tunnel.ifindex[side] = index;
        if rec.tunnel.created[side] {
            rec.push(Undo::DeleteLink {
                dev: dev.to_string(),
                ifindex: index,
                kind: "tun".into(),
            })?;
        }
    }
    // 2. The plan (device creation is done).
    for (i, step) in plan.iter().enumerate() {
        fail_point(i)?;
        let done_early = matches!(step, Step::SetAddrGenModeNone { dev }
            if before[side_of(spec, dev)].is_some());
        if !done_early {
            run_step(nl, step, &before, spec, rec)?;
        }
    }
    Ok(())
}

/// Debug builds only: `HOSTKIT_TUN_FAIL_AT_STEP=N` makes the setup fail before plan step N, so
/// tests can check that a setup failing half-way is undone exactly.
#[cfg(debug_assertions)]
fn fail_point(step: usize) -> Result<(), SetupError> {
    match std::env::var("HOSTKIT_TUN_FAIL_AT_STEP") {
        Ok(n) if n.trim().parse() == Ok(step) => Err(SetupError::Injected(step)),
        _ => Ok(()),
    }
}

#[cfg(not(debug_assertions))]
fn fail_point(_step: usize) -> Result<(), SetupError> {
    Ok(())
}

/// Refuses an existing device that is not a TUN/TAP device of `mode` (before anything
/// changes; `--dry-run` refuses the same).
pub fn check_existing(
    dev: &str,
    link: &crate::netlink::LinkInfoSummary,
    mode: DeviceMode,
) -> Result<(), SetupError> {
    if link.kind.as_deref() != Some("tun") {
        return Err(SetupError::NotTun {
            dev: dev.to_string(),
            kind: link
                .kind
                .clone()
                .map(|k| format!("a {k} device"))
                .unwrap_or_else(|| "a device without a kind".into()),
            mode,
        });
    }
    let is = if link.tun.unwrap_or_default().tap {
        DeviceMode::Tap
    } else {
        DeviceMode::Tun
    };
    if is != mode {
        return Err(SetupError::WrongMode {
            dev: dev.to_string(),
            is,
            wanted: mode,
        });
    }
    Ok(())
}

fn side_of(spec: &TunnelSpec, dev: &str) -> usize {
    spec.devs().iter().position(|d| *d == dev).unwrap_or(0)
}

fn index_of(nl: &Netlink, dev: &str) -> Result<u32, SetupError> {
    nl.link_by_name(dev)?.map(|l| l.index).ok_or_else(|| {
        SetupError::Netlink(NetlinkError {
            op: format!("find device {dev}"),
            message: "the device vanished".into(),
            errno: Some(libc::ENODEV),
        })
    })
}

fn run_step(
    nl: &Netlink,
    step: &Step,
    before: &[Option<crate::netlink::LinkInfoSummary>],
    spec: &TunnelSpec,
    rec: &mut Recorder<'_>,
) -> Result<(), SetupError> {
    let side_of = |dev: &str| spec.devs().iter().position(|d| *d == dev).unwrap_or(0);
    match step {
        Step::CreateTun { .. } => Ok(()),
        Step::SetMac { dev, mac } => {
            let idx = index_of(nl, dev)?;
            if let Some(prev) = before[side_of(dev)].as_ref().and_then(|l| l.mac)
                && prev != mac.0
            {
                rec.push(Undo::RestoreMac {
                    dev: dev.clone(),
                    ifindex: idx,
                    mac: crate::spec::MacAddr(prev),
                })?;
            }
            nl.set_link_address(idx, dev, mac.0)?;
            Ok(())
        }
        Step::SetMtu { dev, mtu } => {
            let idx = index_of(nl, dev)?;
            if let Some(prev) = before[side_of(dev)].as_ref().and_then(|l| l.mtu)
                && prev != *mtu
            {
                rec.push(Undo::RestoreMtu {
                    dev: dev.clone(),
                    ifindex: idx,
                    mtu: prev,
                })?;
            }
            nl.set_link_mtu(idx, dev, *mtu)?;
            Ok(())
        }
        Step::SetTxQueueLen { dev, len } => {
            let idx = index_of(nl, dev)?;
            if let Some(prev) = before[side_of(dev)].as_ref().and_then(|l| l.txqueuelen)
                && prev != *len
            {
                rec.push(Undo::RestoreTxQueueLen {
                    dev: dev.clone(),
                    ifindex: idx,
                    len: prev,
                })?;
            }
            nl.set_link_txqueuelen(idx, dev, *len)?;
            Ok(())
        }
        Step::SetAddrGenModeNone { dev } => {
            let idx = index_of(nl, dev)?;
            if let Some(prev) = before[side_of(dev)].as_ref().and_then(|l| l.addr_gen_mode)
                && prev != ADDR_GEN_MODE_NONE
            {
                rec.push(Undo::RestoreAddrGenMode {
                    dev: dev.clone(),
                    ifindex: idx,
                    mode: prev,
                })?;
            }
            match nl.set_addr_gen_mode(idx, dev, ADDR_GEN_MODE_NONE) {
                // IPv6 compiled out or disabled at boot: nothing to silence, and an IPv4
                // tunnel does not need it.
                Err(e)
                    if matches!(e.errno, Some(libc::EAFNOSUPPORT | libc::EOPNOTSUPP))
                        && !spec.families().contains(&crate::Family::Ipv6) =>
                {
                    Ok(())
                }
                other => other.map_err(Into::into),
            }
        }
        Step::AddAddress { dev, local, peer } => {
            let idx = index_of(nl, dev)?;
            let added = match local {
                IpAddr::V4(_) => nl.add_peer_address(idx, dev, *local, *peer),
                IpAddr::V6(_) => nl.add_address(
                    idx,
                    dev,
                    *local,
                    128,
                    None,
                    (AddressFlags::Nodad | AddressFlags::Noprefixroute).bits(),
                ),
            };
            match added {
                Ok(()) => {
                    rec.ours.push(*local);
                    rec.push(Undo::DelAddress {
                        dev: dev.clone(),
                        ifindex: idx,
                        local: *local,
                        peer: local.is_ipv4().then_some(*peer),
                    })
                }
                // An attached device that already carries the address: not ours to remove.
                Err(e) if e.is_exists() && before[side_of(dev)].is_some() => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        Step::AddPeerRoute { dev, local, peer } => {
            let idx = index_of(nl, dev)?;
            if nl.find_peer_route(*peer, idx)?.is_some() {
                return Ok(());
            }
            rec.push(Undo::DelPeerRoute {
                dev: dev.clone(),
                ifindex: idx,
                peer: *peer,
                local: *local,
            })?;
            nl.add_peer_route(*peer, *local, idx, dev)?;
            Ok(())
        }
        Step::LinkUp { dev } => {
            let idx = index_of(nl, dev)?;
            if let Some(prev) = &before[side_of(dev)]
                && !prev.up
            {
                rec.push(Undo::LinkDown {
                    dev: dev.clone(),
                    ifindex: idx,
                })?;
            }
            nl.set_link_up(idx, dev)?;
            Ok(())
        }
        Step::MoveLocalRoute { dev, addr, table } => {
            let idx = index_of(nl, dev)?;
            let route = wait_for_local_route(nl, dev, idx, *addr)?;
            // An address we added takes its local route with it when it is removed: putting
            // the route back first would leave a ghost behind. One that was there before gets
            // its route back the kernel's own way.
            if !rec.ours.contains(addr) {
                match addr {
                    IpAddr::V4(_) => rec.push(Undo::RestoreLocalRoute {
                        dev: dev.clone(),
                        ifindex: idx,
                        addr: *addr,
                    })?,
                    IpAddr::V6(_) => {
                        let a = nl
                            .addresses(Some(idx))?
                            .into_iter()
                            .find(|a| a.local == *addr)
                            .ok_or_else(|| NetlinkError {
                                op: format!("find address {addr} on {dev}"),
                                message: "the address vanished".into(),
                                errno: Some(libc::EADDRNOTAVAIL),
                            })?;
                        rec.push(Undo::ReAddAddress {
                            dev: dev.clone(),
                            ifindex: idx,
                            addr: *addr,
                            prefix_len: a.prefix_len,
                            peer: a.peer,
                            flags: a.flags & USER_ADDRESS_FLAGS,
                        })?;
                    }
                }
            }
            nl.delete_route(&route, &format!("local {addr} dev {dev} table local"))?;
            // A route already in the table is not ours: neither added nor removed.
            if nl.find_local_route(*addr, *table, Some(idx))?.is_some() {
                return Ok(());
            }
            rec.push(Undo::DelTableRoute {
                dev: dev.clone(),
                ifindex: idx,
                addr: *addr,
                table: *table,
            })?;
            nl.add_local_route(*addr, idx, dev, *table)?;
            Ok(())
        }
        Step::AddRule { dev, family, table } => {
            // A rule that is already there is not ours: leave it (and its removal) alone.
            if !nl.find_iif_rules(*family, dev, *table)?.is_empty() {
                return Ok(());
            }
            // Journal first, with the priority the kernel would choose, then add it so.
            let priority = nl.next_rule_priority(*family)?;
            rec.push(Undo::DelRule {
                dev: dev.clone(),
                family: *family,
                table: *table,
                priority,
            })?;
            nl.add_iif_rule(*family, dev, *table, priority)?;
            Ok(())
        }
        Step::SetSysctl { key, value } => {
            let prev = sysctl::read(key).map_err(SetupError::Sysctl)?;
            if prev != *value {
                rec.push(Undo::RestoreSysctl {
                    key: key.clone(),
                    value: prev,
                })?;
                sysctl::write(key, value).map_err(SetupError::Sysctl)?;
            } else if let Some((_, before)) = rec.sysctls_before.iter().find(|(k, _)| k == key) {
                // Another tunnel set it: record the value from before it, so that whichever
                // tunnel leaves last puts it back.
                let before = before.clone();
                rec.push(Undo::RestoreSysctl {
                    key: key.clone(),
                    value: before,
                })?;
            }
            // Otherwise it was already so before any tunnel: not ours to restore.
            Ok(())
        }
    }
}

/// The kernel adds an address's local route when the address is usable (IPv6: after link up);
/// wait for it, bounded in time.
fn wait_for_local_route(
    nl: &Netlink,
    dev: &str,
    index: u32,
    addr: IpAddr,
) -> Result<crate::netlink::RouteSummary, SetupError> {
    let start = Instant::now();
    loop {
        if let Some(route) = nl.find_local_route(addr, TABLE_LOCAL, Some(index))? {
            return Ok(route);
        }
        if start.elapsed() > LOCAL_ROUTE_WAIT {
            return Err(SetupError::NoLocalRoute {
                dev: dev.to_string(),
                addr,
                secs: LOCAL_ROUTE_WAIT.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

//! Running a tunnel: `hostkit tun up`, and every program built on [`super::Relay`].

use std::net::IpAddr;
use std::os::fd::AsFd;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use hostkit_net::state::{self, DirStats};
use hostkit_net::{
    MacAddr, Netlink, RuleSides, SpecInput, StateFile, Tunnel, TunnelSpec, TunnelState, Undo,
    WatchError, Watcher,
};
use hostkit_tun::pipeline::StageSnapshot;
use hostkit_tun::{DeviceMode, Engine, EngineProfile, ProfileOptions, Relay, offload_names};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::common::{
    WhereArgs, enter_namespace, packet_log, report_teardown, stderr_sink, unix_now,
};
use super::control::{self, Control};
use super::lab::LabArgs;
use super::notify::{Notifier, status};
use crate::Outcome;
use crate::printer::Printer;

/// How often the running relay checks that each peer is still routed through the tunnel.
const PATH_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Longest wait for a signal between two looks at the relay and the counters.
const POLL_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Watches, while the relay runs, that `route get` of each peer still names the tunnel's device
/// and source; warns once when that stops being true, and once when it is true again.
struct PathWatch<'a> {
    spec: &'a TunnelSpec,
    bad: Vec<String>,
}

impl<'a> PathWatch<'a> {
    fn new(spec: &'a TunnelSpec) -> PathWatch<'a> {
        PathWatch {
            spec,
            bad: Vec::new(),
        }
    }

    /// Returns whether every path is as the tunnel needs it (or cannot be checked).
    fn check(&mut self, nl: &Netlink, printer: &Printer) -> bool {
        // Without the routing rewrite the traffic is meant to bypass the relay.
        if !self.spec.routing {
            return true;
        }
        let Ok(checks) = hostkit_net::check_paths(nl, self.spec) else {
            return true;
        };
        let bad: Vec<String> = checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.to_string())
            .collect();
        if bad != self.bad {
            for line in &bad {
                printer.warn(format!(
                    "traffic no longer takes the tunnel: route get {line} (hostkit tun status shows the details)"
                ));
            }
            if bad.is_empty() {
                printer.note("every peer is routed through the tunnel again");
            }
            self.bad = bad;
        }
        self.bad.is_empty()
    }
}

/// Options of `hostkit tun up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Read the options from this TOML file, a key per long option (`table = 13`, `impair =
    /// ["loss 1%"]`; `hostkit tun config --print` writes one). Options given on the command line
    /// override it. Like every instruction hostkit takes, it must be a regular file owned by root,
    /// not writable by group or others, in a directory nobody else may write.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Name of the first device (default: tun0, or tap0 with --mode tap).
    #[arg(
        long,
        value_name = "NAME",
        default_value = "tun0",
        default_value_if("mode", "tap", "tap0"),
        hide_default_value = true
    )]
    pub dev0: String,
    /// Name of the second device (default: tun1, or tap1 with --mode tap).
    #[arg(
        long,
        value_name = "NAME",
        default_value = "tun1",
        default_value_if("mode", "tap", "tap1"),
        hide_default_value = true
    )]
    pub dev1: String,
    /// `tun`: two TUN devices, IP packets cross the relay. `tap`: two TAP devices, Ethernet
    /// frames cross it — ARP and IPv6 neighbour discovery too (each side learns the other's
    /// MAC address over the relay), VLAN tags, any EtherType.
    #[arg(long, value_enum, default_value_t = ModeArg::Tun)]
    pub mode: ModeArg,
    /// With --mode tap: MAC address of the first device (a unicast one, e.g.
    /// 02:00:00:00:00:01). Default: for a device hostkit creates, a stable address derived
    /// from its name (02:…, the same run after run); an existing device keeps its own.
    #[arg(long, value_name = "MAC")]
    pub mac0: Option<MacAddr>,
    /// With --mode tap: MAC address of the second device (as --mac0).
    #[arg(long, value_name = "MAC")]
    pub mac1: Option<MacAddr>,
    /// Address of the first device; its peer is the second device's address of the same
    /// family. Give one IPv4 and/or one IPv6 address (repeat for dual stack). Default 10.0.0.1.
    #[arg(long, value_name = "ADDR")]
    pub addr0: Vec<IpAddr>,
    /// Address of the second device (default 10.0.0.2).
    #[arg(long, value_name = "ADDR")]
    pub addr1: Vec<IpAddr>,
    /// Routing table that receives the two addresses' local routes (not 0, 253, 254, 255).
    #[arg(long, value_name = "ID", default_value_t = hostkit_net::DEFAULT_TABLE)]
    pub table: u32,
    /// MTU of both devices (default: the kernel's, 1500).
    #[arg(long, value_name = "BYTES")]
    pub mtu: Option<u32>,
    /// `--netns` and `--run-dir`.
    #[command(flatten)]
    pub place: WhereArgs,
    /// Print the equivalent `ip` commands, in order, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Skip the routing rewrite: traffic then goes through `lo`, not the relay (shows the
    /// problem hostkit solves).
    #[arg(long, conflicts_with = "rules")]
    pub no_routing: bool,
    /// Which devices get an `iif DEV lookup TABLE` rule; anything but `both` reproduces the
    /// classic one-sided mistake (requests cross, replies are lost).
    #[arg(long, value_enum, default_value_t = RulesArg::Both)]
    pub rules: RulesArg,
    /// Leave net.ipv4.ip_nonlocal_bind alone (IPv4 servers then cannot bind the moved
    /// addresses; IPv6 never needs it).
    #[arg(long)]
    pub no_nonlocal_bind: bool,
    /// Relay engine: `fast` (vnet headers with GSO/checksum offloads passed through, epoll,
    /// batches, one worker per queue pair) or `simple` (one packet per read and write, one
    /// thread per direction: the classic relay).
    #[arg(long, value_enum, default_value_t = EngineArg::Fast)]
    pub engine: EngineArg,
    /// Queues per device for the fast engine (default: one per CPU but one, at least 1, at most 4).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub queues: Option<u16>,
    /// Nice value of the relay's worker threads (default: -10 with the fast engine — the relay
    /// is the network path, like the kernel's softirqs it should win the CPU from the programs
    /// whose traffic it carries — unchanged with the simple one). 0 keeps normal priority.
    #[arg(long, value_name = "NICE", allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub nice: Option<i32>,
    /// Fast engine: interrupt moderation. After a wake-up that found several wire-sized packets
    /// queued, the worker pauses this many microseconds before waiting again, so the next
    /// wake-up moves a batch rather than one packet; light traffic (a ping) and GSO
    /// super-packets never wait. 0 turns it off.
    #[arg(long, value_name = "MICROSECONDS", default_value_t = hostkit_tun::DEFAULT_COALESCE_US, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub coalesce_us: u64,
    /// Transmit queue length of both devices (default: 5000 with the fast engine, the kernel's
    /// 500 with the simple one; at most 1 000 000 — the kernel allocates a slot per packet).
    #[arg(long, value_name = "PACKETS", value_parser = clap::value_parser!(u32).range(1..=i64::from(hostkit_net::MAX_TXQUEUELEN)))]
    pub txqueuelen: Option<u32>,
    /// The stages on the relay's path (`--pcap`, `--impair`, filters).
    #[command(flatten)]
    pub lab: LabArgs,
}

/// Relay engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineArg {
    /// Offload pass-through, epoll, batching, multi-queue.
    Fast,
    /// One packet per read/write.
    Simple,
}

impl EngineArg {
    fn engine(self) -> Engine {
        match self {
            EngineArg::Fast => Engine::Fast,
            EngineArg::Simple => Engine::Simple,
        }
    }
}

/// Device modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// TUN devices: IP packets.
    Tun,
    /// TAP devices: Ethernet frames.
    Tap,
}

impl ModeArg {
    fn mode(self) -> DeviceMode {
        match self {
            ModeArg::Tun => DeviceMode::Tun,
            ModeArg::Tap => DeviceMode::Tap,
        }
    }
}

/// Which devices get a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RulesArg {
    /// Both devices (correct).
    Both,
    /// Only the first device.
    FirstOnly,
    /// Only the second device.
    SecondOnly,
}

impl UpArgs {
    /// The options of a command line that has `tun up`'s (flattened in a program's own clap
    /// command, say), with the `--config` file they name applied: the command line and the
    /// environment over the file over the defaults. Errors name the file, line and column.
    pub fn from_matches(matches: &clap::ArgMatches) -> anyhow::Result<UpArgs> {
        let args = <UpArgs as clap::FromArgMatches>::from_arg_matches(matches)?;
        super::config::resolve(args, matches)
    }

    /// The relay's decisions, resolved once from the options (and `-v`, the packet log).
    fn profile(&self, printer: &Printer) -> anyhow::Result<EngineProfile> {
        self.profile_with(packet_log(printer))
    }

    fn profile_with(&self, log: hostkit_tun::PacketLog) -> anyhow::Result<EngineProfile> {
        Ok(EngineProfile::resolve(&ProfileOptions {
            engine: self.engine.engine(),
            queues: self.queues.map(usize::from),
            nice: self.nice,
            coalesce: Some(std::time::Duration::from_micros(self.coalesce_us)),
            txqueuelen: self.txqueuelen,
            log,
        })?)
    }

    /// What `up` checks before it changes anything (the settings, the stages' options), with
    /// nothing created.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        let profile = self.profile_with(hostkit_tun::PacketLog::Off)?;
        let spec = self.spec(&profile)?;
        self.lab
            .prepare(spec.devs(), spec.mode.link(), Vec::new())?;
        Ok(())
    }

    fn spec(&self, profile: &EngineProfile) -> anyhow::Result<TunnelSpec> {
        let input = SpecInput {
            devs: [self.dev0.clone(), self.dev1.clone()],
            mode: self.mode.mode(),
            macs: [self.mac0, self.mac1],
            addrs: [self.addr0.clone(), self.addr1.clone()],
            table: self.table,
            mtu: self.mtu,
            no_routing: self.no_routing,
            rules: match self.rules {
                RulesArg::Both => RuleSides::Both,
                RulesArg::FirstOnly => RuleSides::FirstOnly,
                RulesArg::SecondOnly => RuleSides::SecondOnly,
            },
            no_nonlocal_bind: self.no_nonlocal_bind,
            txqueuelen: profile.txqueuelen(),
        };
        Ok(TunnelSpec::new(input)?)
    }
}

/// Runs `hostkit tun up`, with a program's own stages (`own`) on the relay's path.
pub fn run(
    args: UpArgs,
    own: Vec<hostkit_tun::pipeline::FilteredStage>,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    if let Some(path) = &args.config {
        bail!(
            "the options name the configuration {} but it was not read: take them from \
             UpArgs::from_matches (or the command line), not as parsed by clap alone",
            path.display()
        );
    }
    let profile = args.profile(printer)?;
    let spec = args.spec(&profile)?;
    let devs = spec.devs();
    if args.dry_run {
        // Every stage option is checked; no capture file is created.
        args.lab.prepare(devs, spec.mode.link(), own)?;
        return dry_run(&spec, args.place.netns.as_deref(), printer);
    }
    // Bad stage options are refused before anything changes.
    let mut lab = args.lab.prepare(devs, spec.mode.link(), own)?;
    // Run by a service manager (`Type=notify`): tell it when the tunnel is ready, and stopping.
    // The socket is made here, before `--netns` is entered: an abstract `@name` is looked up in
    // the sending socket's network namespace, the service manager's.
    let notifier = Notifier::from_env().unwrap_or_else(|e| {
        printer.warn(e);
        None
    });
    let notify = |message: &str| {
        if let Some(n) = &notifier
            && let Err(e) = n.send(message)
        {
            printer.warn(e);
        }
    };
    notify(&status(&format!(
        "setting up {} <-> {}",
        spec.ends[0].dev, spec.ends[1].dev
    )));
    // Signals are taken through a signalfd; block them before any thread exists so that a
    // SIGTERM during setup is handled (by a full teardown) once setup is done.
    let mut mask = SigSet::empty();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        mask.add(sig);
    }
    mask.thread_block().context("block signals")?;
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .context("create signalfd")?;

    let netns_inode = enter_namespace(args.place.netns.as_deref(), "hostkit tun up")?;
    // A processor runs in the tunnel's namespace; one that does not start is refused here,
    // before anything changes.
    lab.start_processor()?;
    let run_dir = args
        .place
        .run_dir(true)?
        .context("the run directory vanished")?;
    let state_file = StateFile::acquire(&run_dir, netns_inode, spec.devs())?;
    // Another tunnel of the namespace using one of our device names: refused at once.
    let records = state::records(&run_dir, netns_inode)?;
    for r in records.iter().filter(|r| r.path != state_file.path()) {
        if let Some(devs) = r.devs()
            && let Some(dev) = spec
                .devs()
                .into_iter()
                .find(|d| devs.iter().any(|o| o == d))
        {
            let _ = state_file.remove();
            bail!(
                "device {dev} belongs to the tunnel {}; choose other device names, or stop that tunnel first (hostkit tun down --dev0 {} --dev1 {})",
                r.describe(),
                devs[0],
                devs[1]
            );
        }
    }
    let neighbours = super::common::neighbours(&records, state_file.path());
    let nl = Netlink::connect().context("open a netlink socket")?;
    let mut state = TunnelState {
        version: hostkit_net::state::STATE_VERSION,
        pid: std::process::id(),
        netns: args.place.netns.clone(),
        netns_inode,
        spec: spec.clone(),
        engine: profile.engine(),
        offloads: String::new(),
        started_unix: unix_now(),
        undo: Vec::new(),
        stats: Vec::new(),
        stages: Vec::new(),
    };
    let established = Tunnel::establish(
        &nl,
        &spec,
        profile.device_setup(),
        &neighbours,
        &mut |undo| {
            state.undo = undo.to_vec();
            state_file.write(&state)
        },
    );
    let mut tunnel = match established {
        Ok(t) => t,
        Err(failed) => {
            let failures = report_teardown(printer, &failed.teardown, false);
            if failures.is_empty() {
                let _ = state_file.remove();
            }
            return Err(anyhow!(failed.error)).context(format!(
                "cannot set up the tunnel {} <-> {}; everything done so far was undone{}",
                spec.ends[0].dev,
                spec.ends[1].dev,
                if failures.is_empty() {
                    ""
                } else {
                    " except what is listed above"
                }
            ));
        }
    };
    state.undo = tunnel.undo.clone();
    state.offloads = offload_names(tunnel.offloads[0]);
    if profile.log_turns_offloads_off() {
        printer.note("packet log on: offloads are off, so the log shows wire-sized packets");
    }
    let mut relay_opts = profile.relay_options(stderr_sink());
    // Every tunnel has a pipeline (its slots are what `tun set` fills).
    let relay = lab.pipeline().and_then(|pipeline| {
        relay_opts.pipeline = Some(pipeline.clone());
        Ok((
            Relay::start_queues(tunnel.queue_pairs(), relay_opts)?,
            pipeline,
        ))
    });
    let (relay, pipeline) = match relay {
        Ok(r) => r,
        Err(e) => {
            report_teardown(
                printer,
                &tunnel.teardown(&nl, &neighbours.keep_sysctls),
                false,
            );
            let _ = state_file.remove();
            return Err(anyhow!(e).context("start the relay"));
        }
    };
    printer.note(format!(
        "relay running: {} (fd {}) <-> {} (fd {}), {}; table {}; {}; pid {} — stop with Ctrl-C, SIGTERM or `hostkit tun down`",
        spec.ends[0].dev,
        fds(&tunnel.devices[0]),
        spec.ends[1].dev,
        fds(&tunnel.devices[1]),
        describe_pairs(&spec, &nl),
        spec.table,
        profile.describe(tunnel.devices[0].len(), tunnel.offloads[0]),
        std::process::id()
    ));
    for line in stage_report(&pipeline.snapshot(), spec.devs(), "", false) {
        printer.note(line);
    }
    // Live control (`tun set`, `tun stats`): a socket beside the state file.
    let control = match Control::listen(control::socket_path(state_file.path())) {
        Ok(c) => Some(c),
        Err(e) => {
            printer.warn(format!(
                "live control is off (cannot listen beside {}: {e}); `tun set` and `tun stats` will not reach this relay",
                state_file.path().display()
            ));
            None
        }
    };

    // Watch the kernel's events about the tunnel, and put back what drifts (link down/up,
    // addresses removed): traffic must not silently bypass the relay.
    let mut watcher = match Watcher::new(&spec, tunnel.created, tunnel.ifindex) {
        Ok(w) => Some(w),
        Err(e) => {
            printer.warn(format!(
                "cannot subscribe to rtnetlink events ({e}): changes to the tunnel are only reported, not repaired"
            ));
            None
        }
    };
    // The routing is in place and the relay runs: ready.
    notify(&format!(
        "READY=1\n{}",
        status(&format!(
            "relaying {} <-> {} ({}), table {}",
            spec.ends[0].dev,
            spec.ends[1].dev,
            describe_pairs(&spec, &nl),
            spec.table
        ))
    ));
    let mut running = Running {
        sigfd: &sigfd,
        relay: &relay,
        pipeline: &pipeline,
        state: &mut state,
        state_file: &state_file,
        nl: &nl,
        printer,
        paths: PathWatch::new(&spec),
        watcher: watcher.as_mut(),
        undo: &mut tunnel.undo,
        control: control.as_ref(),
        devs: spec.devs(),
        link: spec.mode.link(),
    };
    let stop = running.wait_for_stop();
    notify(&format!(
        "STOPPING=1\n{}",
        status(&format!("stopping ({stop}); tearing down"))
    ));
    drop(watcher);
    let counters = relay.stats();
    let relay_errors = relay.stop();
    state.stats = counters.snapshot().to_vec();
    state.stages = pipeline.snapshot();
    printer.note(format!("stopping ({stop}); tearing down"));
    // The tunnels running now (not those at start) decide which sysctls must stay.
    let keep = state::records(&run_dir, netns_inode)
        .map(|r| super::common::neighbours(&r, state_file.path()).keep_sysctls)
        .unwrap_or_else(|_| neighbours.keep_sysctls.clone());
    let report = tunnel.teardown(&nl, &keep);
    let failures = report_teardown(printer, &report, false);
    if failures.is_empty() {
        state_file.remove().context("remove the state file")?;
    }
    for dir in &state.stats {
        printer.out(dir.to_string());
    }
    for line in stage_lines(&state.stages, spec.devs()) {
        printer.out(line);
    }
    if !failures.is_empty() {
        bail!(
            "teardown left {} item(s) behind: {}; run `hostkit tun down`",
            failures.len(),
            failures.join("; ")
        );
    }
    if let Some(err) = relay_errors.into_iter().next() {
        if let Stop::Drift(cause) = &stop {
            printer.warn(format!("also: {cause}"));
        }
        return Err(anyhow!(err).context("the relay stopped on an error; the tunnel was torn down"));
    }
    if let Stop::Drift(cause) = stop {
        return Err(anyhow!(cause).context(format!(
            "cannot keep the tunnel {} <-> {}; the tunnel was torn down",
            spec.ends[0].dev, spec.ends[1].dev
        )));
    }
    Ok(Outcome::Success)
}

/// `capture: pcapng t.pcapng (wire-sized packets), filter 'tcp port 80'`.
pub(crate) fn describe_stage(stage: &StageSnapshot) -> String {
    let mut line = format!("{}: {}", stage.name, stage.description);
    if let Some(f) = &stage.filter {
        line.push_str(&format!(", filter '{f}'"));
    }
    line
}

/// Each stage as `stage N: …`, followed (with `counters`) by its counter lines indented under
/// it, the whole indented by `indent` — what `tun status`, `tun stats` and `tun set` print.
pub(crate) fn stage_report(
    stages: &[StageSnapshot],
    devs: [&str; 2],
    indent: &str,
    counters: bool,
) -> Vec<String> {
    let mut lines = Vec::new();
    for (i, stage) in stages.iter().enumerate() {
        lines.push(format!(
            "{indent}stage {}: {}",
            i + 1,
            describe_stage(stage)
        ));
        if counters {
            for line in stage_lines(std::slice::from_ref(stage), devs) {
                lines.push(format!("{indent}  {line}"));
            }
        }
    }
    lines
}

/// A stage's counters, a line per direction that saw packets:
/// `impair tun0 -> tun1: 5000 packets, 210000 bytes, 0 dropped, … (dropped_loss 49)`.
pub(crate) fn stage_lines(stages: &[StageSnapshot], devs: [&str; 2]) -> Vec<String> {
    let mut lines = Vec::new();
    for stage in stages {
        for (i, d) in stage.directions.iter().enumerate() {
            let (from, to) = if i == 0 {
                (devs[0], devs[1])
            } else {
                (devs[1], devs[0])
            };
            if d.packets == 0 && d.bypassed == 0 && d.injected == 0 {
                continue;
            }
            let mut line = format!(
                "{} {from} -> {to}: {} packets, {} bytes, {} dropped, {} delayed ({} held), {} injected, {} passed by its filter",
                stage.name,
                d.packets,
                d.bytes,
                d.dropped,
                d.delayed,
                d.held,
                d.injected,
                d.bypassed
            );
            if !d.extra.is_empty() {
                let extra: Vec<String> = d.extra.iter().map(|(k, v)| format!("{k} {v}")).collect();
                line.push_str(&format!(" ({})", extra.join(", ")));
            }
            lines.push(line);
        }
    }
    lines
}

fn fds(queues: &[Arc<hostkit_tun::TunDevice>]) -> String {
    queues
        .iter()
        .map(|q| std::os::fd::AsRawFd::as_raw_fd(&**q).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// `10.0.0.1 <-> 10.0.0.2`; in TAP mode preceded by `TAP 02:… <-> 02:…, ` (the devices' MAC
/// addresses as they are now).
fn describe_pairs(spec: &TunnelSpec, nl: &Netlink) -> String {
    let pairs = spec
        .pairs(0)
        .iter()
        .map(|(l, p)| format!("{l} <-> {p}"))
        .collect::<Vec<_>>()
        .join(", ");
    if spec.mode != DeviceMode::Tap {
        return pairs;
    }
    let mac = |dev: &str| {
        nl.link_by_name(dev)
            .ok()
            .flatten()
            .and_then(|l| l.mac)
            .map_or_else(|| "?".to_string(), |m| MacAddr(m).to_string())
    };
    format!(
        "TAP {} <-> {}, {pairs}",
        mac(&spec.ends[0].dev),
        mac(&spec.ends[1].dev)
    )
}

fn dry_run(spec: &TunnelSpec, netns: Option<&str>, printer: &Printer) -> anyhow::Result<Outcome> {
    // Look (read-only) for existing devices, so that the commands are exact; if we cannot
    // look (no privileges for the namespace), assume they will be created.
    let nl = netns.is_none().then(Netlink::connect).and_then(Result::ok);
    let mut created = [true, true];
    for (side, dev) in spec.devs().into_iter().enumerate() {
        let Some(link) = nl
            .as_ref()
            .and_then(|nl| nl.link_by_name(dev).ok().flatten())
        else {
            continue;
        };
        // The same refusal as `up` itself: a dry run that passes is a run that would start.
        hostkit_net::check_existing(dev, &link, spec.mode)?;
        created[side] = false;
    }
    for step in spec.plan(created) {
        for cmd in step.commands(netns) {
            printer.out(cmd);
        }
    }
    // `ip tuntap add` makes persistent devices, hostkit's own vanish with the relay: say how
    // to remove them, so a replay leaves nothing behind.
    let n = netns.map(|ns| format!(" -n {ns}")).unwrap_or_default();
    for (dev, create) in spec.devs().iter().zip(created) {
        if create {
            printer.out(format!(
                "# hostkit's {dev} is not persistent (it vanishes with the relay); after a replay remove it with: ip{n} tuntap del dev {dev} mode {}",
                spec.mode
            ));
        }
    }
    printer.note("dry run: nothing was changed");
    Ok(Outcome::Success)
}

/// Why the relay stopped.
#[derive(Debug)]
enum Stop {
    /// A signal (its name).
    Signal(String),
    /// The relay failed.
    RelayFailed,
    /// The tunnel's configuration drifted and could not be put back.
    Drift(WatchError),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Signal(name) => write!(f, "got {name}"),
            Stop::RelayFailed => write!(f, "the relay failed"),
            Stop::Drift(e) => write!(f, "cannot keep the tunnel: {e}"),
        }
    }
}

/// The running relay's main thread: signals, counters, the path check and the watcher.
struct Running<'a> {
    sigfd: &'a SignalFd,
    relay: &'a Relay,
    /// The relay's stages (the same pipeline it runs).
    pipeline: &'a hostkit_tun::Pipeline,
    state: &'a mut TunnelState,
    state_file: &'a StateFile,
    nl: &'a Netlink,
    printer: &'a Printer,
    paths: PathWatch<'a>,
    watcher: Option<&'a mut Watcher>,
    undo: &'a mut Vec<Undo>,
    control: Option<&'a Control>,
    devs: [&'a str; 2],
    link: hostkit_tun::LinkLayer,
}

impl Running<'_> {
    /// Waits for a signal, a relay failure or a drift that cannot be repaired; keeps the state
    /// file's counters fresh and the tunnel's configuration in place meanwhile.
    fn wait_for_stop(&mut self) -> Stop {
        let stats = self.relay.stats();
        let mut last_check = std::time::Instant::now();
        loop {
            // While a watcher pass is pending, the path may be broken for a moment only:
            // check it after the pass.
            let pending = self
                .watcher
                .as_deref()
                .is_some_and(|w| w.timeout().is_some());
            if last_check.elapsed() >= PATH_CHECK_EVERY && !pending {
                last_check = std::time::Instant::now();
                // The safety net: a broken path the events did not explain gets a pass too.
                if !self.paths.check(self.nl, self.printer)
                    && let Some(w) = self.watcher.as_deref_mut()
                {
                    w.poke();
                }
            }
            self.pipeline.tick();
            let now: Vec<DirStats> = stats.snapshot().to_vec();
            let stages = self.pipeline.snapshot();
            if now != self.state.stats || stages != self.state.stages {
                self.state.stats = now;
                self.state.stages = stages;
                if let Err(e) = self.state_file.write(self.state) {
                    log::warn!("cannot update {}: {e}", self.state_file.path().display());
                }
            }
            if self.relay.has_failed() {
                return Stop::RelayFailed;
            }
            if let Some(w) = self.watcher.as_deref_mut()
                && w.is_due()
                && let Err(e) = reconcile(
                    w,
                    self.nl,
                    self.printer,
                    self.undo,
                    self.state,
                    self.state_file,
                )
            {
                return Stop::Drift(e);
            }
            let mut timeout = POLL_EVERY;
            if let Some(t) = self.watcher.as_deref().and_then(Watcher::timeout) {
                timeout = timeout.min(t);
            }
            let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::ZERO);
            let mut fds = vec![PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN)];
            if let Some(w) = self.watcher.as_deref() {
                fds.push(PollFd::new(w.fd(), PollFlags::POLLIN));
            }
            if let Some(c) = self.control {
                fds.push(PollFd::new(c.fd(), PollFlags::POLLIN));
            }
            let _ = poll(&mut fds, timeout);
            let ready = |i: usize| {
                fds.get(i)
                    .and_then(|f| f.revents())
                    .is_some_and(|r| !r.is_empty())
            };
            let events = self.watcher.is_some() && ready(1);
            let control_ready = self.control.is_some() && ready(fds.len() - 1);
            drop(fds);
            if control_ready && let Some(c) = self.control {
                c.serve(|req| self.handle(req));
            }
            if let Ok(Some(info)) = self.sigfd.read_signal() {
                let name = Signal::try_from(info.ssi_signo as i32)
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_else(|_| format!("signal {}", info.ssi_signo));
                return Stop::Signal(name);
            }
            if events
                && let Some(w) = self.watcher.as_deref_mut()
                && let Err(e) = w.drain()
            {
                return Stop::Drift(e);
            }
        }
    }
}

impl Running<'_> {
    /// Answers one live-control request (see [`super::control`]); every change is logged.
    fn handle(&self, req: control::Request) -> control::Reply {
        let result = match req.op.as_str() {
            "stats" => Ok(()),
            "set" => self.set(self.pipeline, &req),
            other => Err(anyhow!("unknown request `{other}` (stats, set)")),
        };
        match result {
            Ok(()) => control::Reply {
                ok: true,
                error: None,
                directions: self.relay.stats().snapshot().to_vec(),
                stages: self.pipeline.snapshot(),
            },
            Err(e) => control::Reply {
                ok: false,
                error: Some(format!("{e:#}")),
                ..control::Reply::default()
            },
        }
    }

    fn set(&self, p: &hostkit_tun::Pipeline, req: &control::Request) -> anyhow::Result<()> {
        // Everything is checked before anything changes.
        let impair = match &req.impair {
            None => None,
            Some(specs) => Some(super::lab::impair_stage(
                specs,
                req.impair_filter.as_deref(),
                req.seed,
                self.devs,
                self.link,
            )?),
        };
        let capture = match (&req.pcap, req.no_pcap) {
            (Some(_), true) => bail!("--pcap and --no-pcap together"),
            (Some(path), false) => {
                if !path.is_absolute() {
                    bail!(
                        "--pcap {}: the relay needs an absolute path",
                        path.display()
                    );
                }
                Some(Some(super::lab::CaptureSpec::new(
                    path,
                    req.pcap_raw,
                    req.pcap_filter.as_deref(),
                    None,
                    self.link,
                )?))
            }
            (None, true) => Some(None),
            (None, false) => None,
        };
        if let Some(c) = capture {
            let stage = c.map(|c| c.start(self.devs)).transpose()?;
            let what = stage
                .as_ref()
                .map(|(s, _)| s.describe())
                .unwrap_or_else(|| "off".into());
            p.replace(super::lab::CAPTURE_SLOT, stage)?;
            self.printer.note(format!("tun set: capture {what}"));
        }
        if let Some(stage) = impair {
            let what = stage
                .as_ref()
                .map(|(s, _)| s.describe())
                .unwrap_or_else(|| "off".into());
            p.replace(super::lab::IMPAIR_SLOT, stage)?;
            self.printer.note(format!("tun set: impair {what}"));
        }
        Ok(())
    }
}

/// One watcher pass: each repair logged on one line, each new undo entry journalled first.
fn reconcile(
    w: &mut Watcher,
    nl: &Netlink,
    printer: &Printer,
    undo: &mut Vec<Undo>,
    state: &mut TunnelState,
    state_file: &StateFile,
) -> Result<(), WatchError> {
    let repairs = w.reconcile(nl, undo, &mut |u| {
        state.undo = u.to_vec();
        state_file.write(state)
    })?;
    for r in repairs {
        printer.warn(r.to_string());
    }
    Ok(())
}

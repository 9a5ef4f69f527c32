//! The relay as a protocol lab: the options that put stages on the path (`--pcap`,
//! `--processor-exec`, `--impair`, filters) and the pipeline they build, with a program's own
//! stages.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use hostkit_tun::LinkLayer;
use hostkit_tun::external::{ExternalStage, FailMode};
use hostkit_tun::filter::Filter;
use hostkit_tun::impair::{ImpairConfig, ImpairStage, os_seed};
use hostkit_tun::pcapng::LinkType;
use hostkit_tun::pcapng::{CaptureOptions, CaptureStage, PcapngWriter, Rotation};
use hostkit_tun::pipeline::{FilteredStage, Pipeline};

use super::compile_filter;
use super::processor::Plan;

/// Default of `--processor-timeout`, ms.
pub const DEFAULT_PROCESSOR_TIMEOUT_MS: u64 = 100;

/// `--processor-fail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FailArg {
    /// Forward every packet, unprocessed.
    Open,
    /// Drop every packet (the default: a processor is there to decide, and traffic it did
    /// not see must not pass for traffic it let through).
    #[default]
    Closed,
}

/// Stages on the relay's path: capture, impairment, and the filters that limit them.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Protocol lab")]
#[command(group(clap::ArgGroup::new("processor").args(["processor_exec", "processor_socket"])))]
pub struct LabArgs {
    /// Capture every packet to this pcapng file: one interface per device, each packet on the
    /// device it was read from (outbound), nanosecond timestamps; wire-sized packets (GSO
    /// super-packets segmented as a wire would carry them). tcpdump -r and tshark read it.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// With --pcap: keep super-packets as they crossed the relay (up to 64 KiB each).
    #[arg(long, requires = "pcap")]
    pub pcap_raw: bool,
    /// With --pcap: start a new file when the current one reaches this many MB (10^6 bytes);
    /// the older ones are FILE.1 (newest) … FILE.N-1.
    #[arg(long, value_name = "MB", requires = "pcap", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub pcap_max: Option<u64>,
    /// With --pcap-max: how many files to keep (default 10).
    #[arg(long, value_name = "N", requires = "pcap_max", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub pcap_files: Option<u32>,
    /// With --pcap: capture only the packets this tcpdump filter matches (`'tcp port 80'`).
    #[arg(long, value_name = "FILTER", requires = "pcap")]
    pub pcap_filter: Option<String>,
    /// Impair the traffic, in tc-netem(8)'s words, e.g. `'delay 10ms 2ms distribution normal
    /// loss 1%'`; `'tun0->tun1: loss 5%'` for one direction only (repeat for the other).
    /// Words: delay TIME [JITTER [CORR%]], distribution uniform|normal|pareto|paretonormal,
    /// loss P% | loss gemodel p [r [1-h [1-k]]], duplicate P%, reorder P% [gap N],
    /// corrupt P%, rate RATE, limit PACKETS. It acts on wire-sized packets, as netem does.
    #[arg(long, value_name = "SPEC")]
    pub impair: Vec<String>,
    /// With --impair: impair only the packets this tcpdump filter matches.
    #[arg(long, value_name = "FILTER", requires = "impair")]
    pub impair_filter: Option<String>,
    /// Seed of every random decision of --impair: the same seed and the same packets give the
    /// same losses (default: a random seed, printed when the relay starts).
    #[arg(long, value_name = "N", requires = "impair")]
    pub seed: Option<u64>,
    /// Give the processor (--processor-exec, --processor-socket) and the own stages of
    /// programs built on the relay only the packets this tcpdump filter matches.
    #[arg(long, value_name = "FILTER")]
    pub processor_filter: Option<String>,
    /// Put your own program, in any language, on the relay's path (after capture, before
    /// impairment): run CMD — split into words as a shell would, but run without one — as
    /// root, with a Unix socket on descriptor 3 speaking the protocol of docs/processors.md.
    #[arg(long, value_name = "CMD", conflicts_with = "processor_socket")]
    pub processor_exec: Option<String>,
    /// As --processor-exec, for a program already listening on this Unix socket; it must be
    /// root's, in directories only root can change, and the listener must run as root.
    #[arg(long, value_name = "PATH")]
    pub processor_socket: Option<PathBuf>,
    /// Longest wait for the processor's verdict on a packet, in ms (default 100); a processor
    /// that takes longer has failed.
    #[arg(long, value_name = "MS", requires = "processor", value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub processor_timeout: Option<u64>,
    /// When the processor dies, misses the deadline or answers garbage: `closed` drops every
    /// packet it would have seen from then on (the default), `open` forwards them unprocessed.
    #[arg(long, value_name = "MODE", value_enum, requires = "processor")]
    pub processor_fail: Option<FailArg>,
}

/// A capture to start: where, how, limited to what.
pub(super) struct CaptureSpec {
    path: PathBuf,
    opts: CaptureOptions,
    raw: bool,
    filter: Option<Filter>,
}

impl CaptureSpec {
    /// Checks a capture's options (the path, the filter) without creating anything.
    pub(super) fn new(
        path: &std::path::Path,
        raw: bool,
        filter: Option<&str>,
        rotation: Option<Rotation>,
        link: LinkLayer,
    ) -> anyhow::Result<CaptureSpec> {
        check_capture_path(path)?;
        Ok(CaptureSpec {
            path: path.to_path_buf(),
            opts: CaptureOptions {
                // Frames of TAP devices are Ethernet, which libpcap reads with any number of
                // interfaces; IP packets get the cooked header (see pcapng).
                link: match link {
                    LinkLayer::Ip => LinkType::LinuxSll2,
                    LinkLayer::Ethernet => LinkType::Ethernet,
                },
                rotation,
                ..CaptureOptions::default()
            },
            raw,
            filter: filter
                .map(|f| compile_filter("--pcap-filter", f, link))
                .transpose()?,
        })
    }

    /// Creates the file (interfaces named after `devs`) and the stage.
    pub(super) fn start(self, devs: [&str; 2]) -> anyhow::Result<FilteredStage> {
        let writer = PcapngWriter::create(&self.path, &devs, self.opts)
            .with_context(|| format!("--pcap {}", self.path.display()))?;
        Ok((Box::new(CaptureStage::new(writer, self.raw)), self.filter))
    }
}

/// The impairment stage of `specs` (`None` when they say nothing), checked.
pub(super) fn impair_stage(
    specs: &[String],
    filter: Option<&str>,
    seed: Option<u64>,
    devs: [&str; 2],
    link: LinkLayer,
) -> anyhow::Result<Option<FilteredStage>> {
    if specs.is_empty() {
        return Ok(None);
    }
    let config = ImpairConfig::parse(specs, devs[0], devs[1])
        .map_err(|e| anyhow::anyhow!("--impair: {e}"))?;
    if config.is_empty() {
        return Ok(None);
    }
    let filter = filter
        .map(|f| compile_filter("--impair-filter", f, link))
        .transpose()?;
    let seed = match seed {
        Some(s) => s,
        None => os_seed().context("--impair: read a random seed")?,
    };
    Ok(Some((Box::new(ImpairStage::new(config, seed)), filter)))
}

/// The stages of a run, checked, before anything on the host changes; the capture file is
/// created when the devices exist ([`Lab::pipeline`]), so that it names them.
pub(super) struct Lab {
    link: LinkLayer,
    capture: Option<CaptureSpec>,
    devs: [String; 2],
    own: Vec<FilteredStage>,
    /// The processor to start, then started ([`Lab::start_processor`]).
    processor: Option<ProcessorRun>,
    impair: Option<FilteredStage>,
}

/// `--processor-exec`/`--processor-socket`, checked, and the stage once started.
struct ProcessorRun {
    plan: Plan,
    timeout: std::time::Duration,
    fail: FailMode,
    filter: Option<Filter>,
    stage: Option<ExternalStage>,
}

/// The slot names `tun set` fills and empties.
pub(super) const CAPTURE_SLOT: &str = "capture";
/// See [`CAPTURE_SLOT`].
pub(super) const IMPAIR_SLOT: &str = "impair";

impl LabArgs {
    /// Checks every option (impairment words, filters, the capture path); `devs` are the
    /// relay's two devices, `link` what their packets start with (filters are compiled for
    /// it), `own` a program's stages.
    pub(super) fn prepare(
        &self,
        devs: [&str; 2],
        link: LinkLayer,
        own: Vec<FilteredStage>,
    ) -> anyhow::Result<Lab> {
        let impair = impair_stage(
            &self.impair,
            self.impair_filter.as_deref(),
            self.seed,
            devs,
            link,
        )?;
        let processor_filter = self
            .processor_filter
            .as_deref()
            .map(|f| compile_filter("--processor-filter", f, link))
            .transpose()?;
        let capture = match &self.pcap {
            None => None,
            Some(path) => Some(CaptureSpec::new(
                path,
                self.pcap_raw,
                self.pcap_filter.as_deref(),
                self.pcap_max.map(|mb| Rotation {
                    max_bytes: mb * 1_000_000,
                    files: self.pcap_files.unwrap_or(10),
                }),
                link,
            )?),
        };
        let processor = Plan::check(
            self.processor_exec.as_deref(),
            self.processor_socket.as_deref(),
        )?
        .map(|plan| ProcessorRun {
            plan,
            timeout: std::time::Duration::from_millis(
                self.processor_timeout
                    .unwrap_or(DEFAULT_PROCESSOR_TIMEOUT_MS),
            ),
            fail: match self.processor_fail.unwrap_or_default() {
                FailArg::Open => FailMode::Open,
                FailArg::Closed => FailMode::Closed,
            },
            filter: processor_filter.clone(),
            stage: None,
        });
        Ok(Lab {
            link,
            capture,
            devs: devs.map(str::to_string),
            own: own
                .into_iter()
                .map(|(p, f)| (p, f.or_else(|| processor_filter.clone())))
                .collect(),
            processor,
            impair,
        })
    }
}

/// What `--pcap` may name: a new file, or an existing regular one, in an existing directory
/// (the writer checks again, without following links, when it creates the file).
fn check_capture_path(path: &std::path::Path) -> anyhow::Result<()> {
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => {}
        Ok(m) if m.file_type().is_symlink() => {
            anyhow::bail!("--pcap {shown}: a symbolic link; give the file itself")
        }
        Ok(_) => anyhow::bail!("--pcap {shown}: not a regular file"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("--pcap {shown}")),
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    if !dir.is_dir() {
        anyhow::bail!("--pcap {shown}: {} is not a directory", dir.display());
    }
    // A directory hostkit cannot write to (read-only, or outside a unit's ReadWritePaths) is
    // refused now, not after the tunnel is set up.
    nix::unistd::access(
        dir,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    )
    .map_err(|e| anyhow::anyhow!("--pcap {shown}: {}: {e}", dir.display()))?;
    Ok(())
}

impl Lab {
    /// Starts the processor, if any (spawned or connected, then greeted, within a few
    /// seconds): in the tunnel's namespace, before anything changes there. A processor that
    /// cannot start is an error.
    pub(super) fn start_processor(&mut self) -> anyhow::Result<()> {
        let Some(p) = &mut self.processor else {
            return Ok(());
        };
        p.stage = Some(p.plan.start(
            p.timeout,
            p.fail,
            self.devs.clone(),
            p.filter.as_ref().map(|f| f.to_string()),
        )?);
        Ok(())
    }

    /// The pipeline — creating the capture file now: a capture slot, the program's own stages,
    /// the external processor, an impairment slot (`tun set` fills and empties the slots while
    /// the relay runs; an empty pipeline costs the relay one atomic load per packet).
    pub(super) fn pipeline(self) -> anyhow::Result<Arc<Pipeline>> {
        let devs = [self.devs[0].as_str(), self.devs[1].as_str()];
        let capture = self.capture.map(|c| c.start(devs)).transpose()?;
        let mut builder = Pipeline::builder()
            .link(self.link)
            .slot(CAPTURE_SLOT, capture);
        for (stage, filter) in self.own {
            builder = builder.boxed(stage, filter);
        }
        if let Some(ProcessorRun {
            stage: Some(stage),
            filter,
            ..
        }) = self.processor
        {
            builder = builder.boxed(Box::new(stage), filter);
        }
        Ok(Arc::new(builder.slot(IMPAIR_SLOT, self.impair).build()))
    }
}

//! Packet filters in the tcpdump language (`'tcp port 80'`, `'icmp'`, `'host 10.0.0.2'`,
//! `'ip6 and udp'`), so that a pipeline stage (capture, impairment, a user processor) can be
//! limited to the packets that match.
//!
//! # How
//!
//! [`Filter::compile`] hands the expression to the real libpcap (`pcap_compile` on a
//! `pcap_open_dead(DLT_RAW)` handle, optimiser on; [`Filter::compile_for`] with
//! [`LinkLayer::Ethernet`] uses `DLT_EN10MB`, for the frames of TAP devices), which turns it into a classic BPF (cBPF)
//! program; [`Filter::matches`] runs that program on each packet with the userspace interpreter in
//! `bpf.rs`. libpcap is loaded at run time with `dlopen` (`libpcap.so.0.8`, then `libpcap.so.1`,
//! then `libpcap.so`): hostkit does not link it and builds without `libpcap-dev`, and only users
//! of filters need the library (Debian package `libpcap0.8`, which `tcpdump` already pulls in).
//! Compiles are serialized by a global lock (older libpcaps' parser is not thread-safe); matching
//! takes no lock and allocates nothing.
//!
//! # Why libpcap and cBPF rather than our own parser
//!
//! Users already know the filter language from tcpdump, and what they expect is exactly
//! tcpdump's behaviour — including the corners: `port 53` means TCP *or* UDP over IPv4 *or*
//! IPv6 and skips non-first fragments, `host` matches either direction, `net 10/8`,
//! `portrange`, `less`/`greater`, byte-offset expressions such as `tcp[tcpflags] & tcp-syn != 0`,
//! arithmetic, and the operator precedence. A hand-written subset parser would accept some of
//! that, silently differ on the rest, and need to be kept compatible forever. With libpcap as
//! the compiler there is no parser to maintain and no dialect: whatever tcpdump accepts is
//! accepted, with the same meaning and the same error messages.
//!
//! cBPF is the other half of that bargain: a small, frozen instruction set (the one the kernel
//! and libpcap run) that is easy to interpret safely. Each program is validated once at
//! construction (known opcodes, forward in-range jumps, a final `RET`, scratch indices below 16,
//! no constant division by zero), so running it cannot loop, panic or read outside the packet;
//! a load past the end of the packet simply rejects it, as in the kernel. An oracle test checks
//! the interpreter against libpcap's own `pcap_offline_filter`.
//!
//! # Limits
//!
//! Between TUN devices packets are raw IPv4/IPv6 (`DLT_RAW`), as the relay sees them, so
//! link-layer primitives (`ether host`, `vlan`, `mpls`, `arp`, …) fail to compile there with
//! libpcap's message; between TAP devices they are Ethernet frames (`DLT_EN10MB`) and the
//! whole language applies (`arp`, `vlan 100`, `ether host 02:…`, `ether proto 0x88b5`, and
//! IP primitives after the header and any tag that `vlan` was told about — as in tcpdump,
//! `vlan` shifts the offsets of what follows it). `protochain`
//! compiles to a backward jump, which the validator refuses (as the kernel would). `ip
//! broadcast` needs a netmask and is refused. Host names are resolved when the filter is
//! compiled, as tcpdump does. libpcap's parse errors lose their `can't parse filter expression:`
//! prefix (libpcap 1.10 adds it, older ones do not): `filter 'tcp prt 80': syntax error`.

mod bpf;
mod libpcap;
#[cfg(test)]
mod tests;

use std::fmt;

pub use bpf::{BpfInsn, ProgramError};

use crate::packet::LinkLayer;

/// A compiled filter: the expression and its validated cBPF program.
#[derive(Debug, Clone)]
pub struct Filter {
    expr: String,
    link: LinkLayer,
    insns: Vec<BpfInsn>,
    program: bpf::Program,
}

/// Why a filter could not be built. Every message starts with `filter '<expression>': `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// libpcap could not be loaded; the message names the library and the Debian package.
    #[error("filter '{expr}': {message}")]
    LibpcapMissing {
        /// The expression.
        expr: String,
        /// Why, and what to install.
        message: String,
    },
    /// libpcap refused the expression; `message` is its own (`pcap_geterr`).
    #[error("filter '{expr}': {message}")]
    Compile {
        /// The expression.
        expr: String,
        /// libpcap's message, e.g. `syntax error`.
        message: String,
    },
    /// The program is not one the interpreter runs safely.
    #[error("filter '{expr}': {error}")]
    Invalid {
        /// The expression (or the name given to a hand-made program).
        expr: String,
        /// What is wrong with the program.
        error: ProgramError,
    },
}

impl FilterError {
    /// The expression the error is about.
    pub fn expression(&self) -> &str {
        match self {
            FilterError::LibpcapMissing { expr, .. }
            | FilterError::Compile { expr, .. }
            | FilterError::Invalid { expr, .. } => expr,
        }
    }
}

impl Filter {
    /// Compiles a tcpdump filter expression with libpcap for raw IP packets.
    ///
    /// ```no_run
    /// # use hostkit_tun::filter::Filter;
    /// let web = Filter::compile("tcp port 80")?;
    /// assert_eq!(web.to_string(), "tcp port 80");
    /// let err = Filter::compile("tcp prt 80").unwrap_err();
    /// assert!(err.to_string().starts_with("filter 'tcp prt 80': "));
    /// # Ok::<(), hostkit_tun::filter::FilterError>(())
    /// ```
    pub fn compile(expr: &str) -> Result<Filter, FilterError> {
        Filter::compile_for(expr, LinkLayer::Ip)
    }

    /// Compiles a tcpdump filter expression for packets of `link`: raw IP ([`LinkLayer::Ip`],
    /// as [`Filter::compile`]) or Ethernet frames ([`LinkLayer::Ethernet`], between TAP
    /// devices: `arp`, `vlan`, `ether host …` compile too).
    ///
    /// ```no_run
    /// # use hostkit_tun::{LinkLayer, filter::Filter};
    /// let arp = Filter::compile_for("arp or vlan", LinkLayer::Ethernet)?;
    /// assert!(Filter::compile("arp").is_err(), "no link layer between TUN devices");
    /// # Ok::<(), hostkit_tun::filter::FilterError>(())
    /// ```
    pub fn compile_for(expr: &str, link: LinkLayer) -> Result<Filter, FilterError> {
        let insns = libpcap::compile(expr, link).map_err(|error| match error {
            libpcap::CompileError::Load(message) => FilterError::LibpcapMissing {
                expr: expr.to_string(),
                message,
            },
            libpcap::CompileError::Compile(message) => FilterError::Compile {
                expr: expr.to_string(),
                message,
            },
        })?;
        Ok(Filter {
            link,
            ..Filter::from_program(expr, insns)?
        })
    }

    /// A filter from a ready cBPF program (e.g. `tcpdump -dd` output), validated; `name` stands
    /// for the expression in messages and [`Display`](fmt::Display). It is taken to be for raw
    /// IP packets ([`Filter::with_link`] says otherwise).
    pub fn from_program(
        name: impl Into<String>,
        insns: Vec<BpfInsn>,
    ) -> Result<Filter, FilterError> {
        let expr = name.into();
        match bpf::Program::new(&insns) {
            Ok(program) => Ok(Filter {
                expr,
                link: LinkLayer::Ip,
                insns,
                program,
            }),
            Err(error) => Err(FilterError::Invalid { expr, error }),
        }
    }

    /// The same program, declared to be for packets of `link` (for a hand-made program).
    pub fn with_link(self, link: LinkLayer) -> Filter {
        Filter { link, ..self }
    }

    /// The link layer it was compiled for.
    pub fn link(&self) -> LinkLayer {
        self.link
    }

    /// True when `packet` — one raw IPv4 or IPv6 packet, or an Ethernet frame for a filter of
    /// [`LinkLayer::Ethernet`], captured whole, without any virtio-net header — matches. Never allocates; a truncated packet simply does not match
    /// what lies past its end.
    pub fn matches(&self, packet: &[u8]) -> bool {
        self.program.run(packet) != 0
    }

    /// The program's return value for `packet`: 0 for no match, otherwise the snapshot length
    /// libpcap chose (262144 for compiled expressions).
    pub fn verdict(&self, packet: &[u8]) -> u32 {
        self.program.run(packet)
    }

    /// The expression (or the name of a hand-made program).
    pub fn expression(&self) -> &str {
        &self.expr
    }

    /// The cBPF instructions, as `tcpdump -dd` would print them.
    pub fn instructions(&self) -> &[BpfInsn] {
        &self.insns
    }
}

impl fmt::Display for Filter {
    /// The expression.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

//! libpcap, loaded at run time with `dlopen`: only its filter compiler (and, for tests, its
//! interpreter) is used.
//!
//! hostkit neither links libpcap nor needs its headers to build; the library is looked up the
//! first time a filter is compiled, under the names Debian's `libpcap0.8` package installs
//! (`libpcap.so.0.8`), the upstream soname (`libpcap.so.1`) and the development link
//! (`libpcap.so`). Every `unsafe` block is inside a safe function here.

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::sync::{Mutex, OnceLock, PoisonError};

use super::bpf::BpfInsn;
use crate::packet::LinkLayer;

/// The names tried, in order.
pub(crate) const LIBRARY_NAMES: [&str; 3] = ["libpcap.so.0.8", "libpcap.so.1", "libpcap.so"];

/// The Debian package that installs the library.
pub(crate) const DEBIAN_PACKAGE: &str = "libpcap0.8";

/// `DLT_RAW`: raw IPv4 or IPv6, told apart by the version nibble, as a TUN device opened with
/// `IFF_NO_PI` carries them (after any virtio-net header). It is 12 on Linux and most systems
/// (14 on OpenBSD; pcap files say `LINKTYPE_RAW`, 101, and libpcap maps it). `DLT_IPV4` (228)
/// and `DLT_IPV6` (229) each carry one family only, so a single filter for a TUN device that
/// sees both needs `DLT_RAW`, for which libpcap compiles `ip` / `ip6` as version-nibble tests.
const DLT_RAW: c_int = 12;

/// `DLT_EN10MB`: Ethernet frames, as a TAP device carries them (`LINKTYPE_ETHERNET`, 1, the
/// same number). libpcap then compiles link-layer primitives (`ether host`, `arp`, `vlan`)
/// and finds IP after the Ethernet header; on a dead handle `vlan` is compiled as a test of
/// the in-line tag (no Linux "VLAN tag present" extension, which only a live socket has).
const DLT_EN10MB: c_int = 1;

/// The DLT for a link layer.
fn dlt(link: LinkLayer) -> c_int {
    match link {
        LinkLayer::Ip => DLT_RAW,
        LinkLayer::Ethernet => DLT_EN10MB,
    }
}

/// The snapshot length given to `pcap_open_dead`; it only bounds what `RET` returns.
const SNAPLEN: c_int = 262_144;

/// `PCAP_NETMASK_UNKNOWN`: only `ip broadcast` needs the netmask, and then fails to compile.
const PCAP_NETMASK_UNKNOWN: u32 = 0xffff_ffff;

/// C's `struct bpf_program`.
#[repr(C)]
struct BpfProgram {
    bf_len: c_uint,
    bf_insns: *mut BpfInsn,
}

/// C's `struct pcap_pkthdr`.
#[repr(C)]
struct PcapPkthdr {
    ts: libc::timeval,
    caplen: u32,
    len: u32,
}

/// An opaque `pcap_t`.
type PcapT = c_void;

/// The functions used, resolved once.
pub(crate) struct Library {
    open_dead: unsafe extern "C" fn(c_int, c_int) -> *mut PcapT,
    compile: unsafe extern "C" fn(*mut PcapT, *mut BpfProgram, *const c_char, c_int, u32) -> c_int,
    geterr: unsafe extern "C" fn(*mut PcapT) -> *mut c_char,
    freecode: unsafe extern "C" fn(*mut BpfProgram),
    close: unsafe extern "C" fn(*mut PcapT),
    #[cfg_attr(not(test), allow(dead_code))]
    offline_filter: unsafe extern "C" fn(*const BpfProgram, *const PcapPkthdr, *const u8) -> c_int,
}

/// The library, loaded on first use (the handle is never closed: the function pointers live as
/// long as the process).
static LIBRARY: OnceLock<Result<Library, String>> = OnceLock::new();

/// Serializes `pcap_compile`: before libpcap 1.8 its parser kept global state, so two compiles
/// at once could corrupt each other.
static COMPILE_LOCK: Mutex<()> = Mutex::new(());

/// The loaded library, or why it could not be loaded (naming the library and the package).
fn library() -> Result<&'static Library, String> {
    LIBRARY
        .get_or_init(|| load(&LIBRARY_NAMES))
        .as_ref()
        .map_err(Clone::clone)
}

/// Checks that libpcap can be loaded; `Err` says why not.
#[cfg(test)]
pub(crate) fn available() -> Result<(), String> {
    library().map(|_| ())
}

/// The message of the last `dlopen`/`dlsym` failure.
fn dl_error() -> String {
    // SAFETY: `dlerror` takes nothing; it returns null or a NUL-terminated string valid until the
    // next dl* call on this thread, which is copied at once.
    let ptr = unsafe { libc::dlerror() };
    if ptr.is_null() {
        String::from("unknown error")
    } else {
        // SAFETY: non-null and NUL-terminated (see above); copied before any other dl* call.
        unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned()
    }
}

/// Loads the first of `names` that `dlopen` finds and resolves the functions.
pub(crate) fn load(names: &[&str]) -> Result<Library, String> {
    let mut last_error = String::from("no library name given");
    for name in names {
        let Ok(cname) = CString::new(*name) else {
            continue;
        };
        // SAFETY: `cname` is a valid NUL-terminated string for the duration of the call; loading
        // libpcap runs only its (side-effect free) initialisers.
        let handle = unsafe { libc::dlopen(cname.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            last_error = dl_error();
            continue;
        }
        return resolve(handle).map_err(|e| format!("{name}: {e}"));
    }
    Err(format!(
        "filters need libpcap, loaded at run time, and none of {} could be loaded \
         (last error: {last_error}); install the Debian package {DEBIAN_PACKAGE}",
        names.join(", ")
    ))
}

/// Resolves one symbol of `handle` as a function pointer of type `F`.
///
/// # Safety
///
/// `handle` is a live `dlopen` handle and `F` is an `unsafe extern "C" fn` type matching the C
/// prototype of `name`.
unsafe fn symbol<F: Copy>(handle: *mut c_void, name: &CStr) -> Result<F, String> {
    const { assert!(size_of::<F>() == size_of::<*mut c_void>()) };
    // SAFETY: the caller guarantees `handle` is live; `name` is NUL-terminated.
    let ptr = unsafe { libc::dlsym(handle, name.as_ptr()) };
    if ptr.is_null() {
        return Err(format!(
            "no symbol {}: {}",
            name.to_string_lossy(),
            dl_error()
        ));
    }
    // SAFETY: `ptr` is the non-null address of the function `name`, `F` is a function pointer
    // type of the same size (checked above) whose prototype matches (the caller's guarantee).
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&ptr) })
}

/// Resolves every function of the library at `handle`.
fn resolve(handle: *mut c_void) -> Result<Library, String> {
    // SAFETY: `handle` was just returned by a successful `dlopen` and is never closed; each type
    // below is the prototype of the libpcap function of that name (`<pcap/pcap.h>`), with
    // `pcap_t *` as an opaque pointer and `struct bpf_program` / `struct pcap_pkthdr` /
    // `struct bpf_insn` laid out by the `#[repr(C)]` structs above.
    unsafe {
        Ok(Library {
            open_dead: symbol(handle, c"pcap_open_dead")?,
            compile: symbol(handle, c"pcap_compile")?,
            geterr: symbol(handle, c"pcap_geterr")?,
            freecode: symbol(handle, c"pcap_freecode")?,
            close: symbol(handle, c"pcap_close")?,
            offline_filter: symbol(handle, c"pcap_offline_filter")?,
        })
    }
}

/// A `pcap_t` from `pcap_open_dead`, closed on drop.
struct DeadHandle {
    lib: &'static Library,
    pcap: *mut PcapT,
}

impl Drop for DeadHandle {
    fn drop(&mut self) {
        // SAFETY: `pcap` came from `pcap_open_dead`, is non-null and is closed only here.
        unsafe { (self.lib.close)(self.pcap) }
    }
}

/// Why [`compile`] failed.
#[derive(Debug)]
pub(crate) enum CompileError {
    /// libpcap could not be loaded (the message names it and the Debian package).
    Load(String),
    /// libpcap refused the expression: its message.
    Compile(String),
}

/// Compiles `expr` for `DLT_RAW` (IP) or `DLT_EN10MB` (Ethernet) with optimisation on and
/// returns the instructions.
pub(crate) fn compile(expr: &str, link: LinkLayer) -> Result<Vec<BpfInsn>, CompileError> {
    let lib = library().map_err(CompileError::Load)?;
    compile_with(lib, expr, link).map_err(CompileError::Compile)
}

/// [`compile`] with the library loaded; `Err` is libpcap's message.
fn compile_with(
    lib: &'static Library,
    expr: &str,
    link: LinkLayer,
) -> Result<Vec<BpfInsn>, String> {
    let cexpr = CString::new(expr).map_err(|_| String::from("contains a NUL byte"))?;
    let _serialized = COMPILE_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    // SAFETY: plain integer arguments; the result is checked for null below.
    let pcap = unsafe { (lib.open_dead)(dlt(link), SNAPLEN) };
    if pcap.is_null() {
        return Err(String::from("pcap_open_dead failed"));
    }
    let dead = DeadHandle { lib, pcap };
    let mut program = BpfProgram {
        bf_len: 0,
        bf_insns: std::ptr::null_mut(),
    };
    // SAFETY: `dead.pcap` is a live `pcap_t`, `program` a valid `struct bpf_program` to fill in,
    // `cexpr` a NUL-terminated string outliving the call; compiles are serialized by
    // `COMPILE_LOCK`.
    let rc = unsafe {
        (lib.compile)(
            dead.pcap,
            &mut program,
            cexpr.as_ptr(),
            1,
            PCAP_NETMASK_UNKNOWN,
        )
    };
    if rc != 0 {
        // SAFETY: `dead.pcap` is live; `pcap_geterr` returns its NUL-terminated error buffer,
        // which lives as long as the handle and is copied before the handle is closed.
        let message = unsafe {
            let ptr = (lib.geterr)(dead.pcap);
            if ptr.is_null() {
                String::from("pcap_compile failed")
            } else {
                CStr::from_ptr(ptr).to_string_lossy().into_owned()
            }
        };
        // libpcap 1.10 prefixes parse errors ("can't parse filter expression: syntax error");
        // older ones say "syntax error". The caller already names the expression.
        let message = match message.strip_prefix("can't parse filter expression: ") {
            Some(rest) => rest.to_string(),
            None => message,
        };
        return Err(message);
    }
    let insns = if program.bf_insns.is_null() || program.bf_len == 0 {
        Vec::new()
    } else {
        // SAFETY: after a successful `pcap_compile`, `bf_insns` points to `bf_len` initialised
        // `struct bpf_insn`s (layout of `BpfInsn`), owned by `program` until `pcap_freecode`.
        unsafe { std::slice::from_raw_parts(program.bf_insns, program.bf_len as usize) }.to_vec()
    };
    // SAFETY: `program` was filled in by `pcap_compile` and is freed once; the instructions were
    // copied out above.
    unsafe { (lib.freecode)(&mut program) };
    drop(dead);
    Ok(insns)
}

/// Runs `insns` on `packet` with libpcap's own interpreter (`pcap_offline_filter`), the packet
/// captured whole; returns the `RET` value. For cross-checking our interpreter.
///
/// The program must be valid ([`super::bpf::Program::new`] accepted it): older libpcap
/// interpreters do not check opcodes or jumps themselves.
#[cfg(test)]
pub(crate) fn offline_filter(insns: &[BpfInsn], packet: &[u8]) -> Result<u32, String> {
    let lib = library()?;
    let bf_len = c_uint::try_from(insns.len()).map_err(|_| String::from("program too long"))?;
    let caplen = u32::try_from(packet.len()).map_err(|_| String::from("packet too long"))?;
    let program = BpfProgram {
        bf_len,
        // libpcap only reads the instructions.
        bf_insns: insns.as_ptr().cast_mut(),
    };
    let header = PcapPkthdr {
        ts: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        caplen,
        len: caplen,
    };
    // SAFETY: `program` points to `bf_len` valid instructions that libpcap only reads, and the
    // caller guarantees they form a valid program (in range jumps and scratch indices, final
    // RET), so the interpreter stays inside it; `header.caplen` is the length of `packet`, so
    // libpcap's bounds-checked loads stay inside it.
    let verdict = unsafe { (lib.offline_filter)(&program, &header, packet.as_ptr()) };
    Ok(verdict as u32)
}

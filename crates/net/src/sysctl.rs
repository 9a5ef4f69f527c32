//! Reading and writing sysctls through `/proc/sys` (in the calling thread's network namespace
//! for `net.*` keys).

use std::io;
use std::path::PathBuf;

/// The `/proc/sys` path of a dotted key; refuses anything but `a.b_c.d` (letters, digits, `_`,
/// `-`, non-empty dot-separated parts), so a key can never name a file outside `/proc/sys`.
pub(crate) fn path(key: &str) -> io::Result<PathBuf> {
    let ok = !key.is_empty()
        && key.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if !ok {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid sysctl key {key:?}"),
        ));
    }
    Ok(PathBuf::from("/proc/sys").join(key.replace('.', "/")))
}

/// Reads a sysctl's value (trimmed).
pub(crate) fn read(key: &str) -> io::Result<String> {
    std::fs::read_to_string(path(key)?)
        .map(|s| s.trim().to_string())
        .map_err(|e| io::Error::new(e.kind(), format!("read sysctl {key}: {e}")))
}

/// Writes a sysctl's value.
pub(crate) fn write(key: &str, value: &str) -> io::Result<()> {
    std::fs::write(path(key)?, value)
        .map_err(|e| io::Error::new(e.kind(), format!("write sysctl {key}={value}: {e}")))?;
    log::debug!("sysctl: {key}={value}");
    Ok(())
}

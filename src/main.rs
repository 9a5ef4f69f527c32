//! The `hostkit` binary: everything is in the library (`src/lib.rs`), so that programs built
//! on the relay (the examples) run exactly what `hostkit tun up` runs.

fn main() -> std::process::ExitCode {
    hostkit::main()
}

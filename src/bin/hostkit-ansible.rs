//! `hostkit-ansible`: hostkit as an Ansible binary module (copy it into a playbook's `library/`
//! as `hostkit`, beside `hostkit.yml`); everything is in the library, `hostkit::ansible`.

fn main() -> std::process::ExitCode {
    hostkit::ansible::main()
}

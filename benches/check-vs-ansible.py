#!/usr/bin/env python3
"""Side-by-side: `hostkit check all` against `ansible-playbook --check --diff`.

Provisioning runs a check on every host, every time; this measures what that costs with
hostkit and with the Ansible run it is compared against: a playbook of two `lineinfile` tasks
(the two file edits of the gtk-legacy recipe: `export GTK_OVERLAY_SCROLLING=0` in ~/.profile and
`gtk-overlay-scrolling=false` in ~/.config/gtk-3.0/settings.ini), on localhost with
`connection: local` and no fact gathering, in `--check --diff` mode.

Run from the repository (after `cargo build --release`), as root for hostkit's live probes:

    python3 benches/check-vs-ansible.py [--ansible PATH] [--runs 10] [--json out.json]
                                        [--before OLD-HOSTKIT]

--ansible is the `ansible-playbook` program or a virtual environment holding it (default:
$HOSTKIT_ANSIBLE_VENV, then `ansible-playbook` on PATH). Without one it says so in one line and
times hostkit alone. Each run times every command once, interleaved, so drift hits all alike;
both tools see the same fresh HOME. It prints the medians (and min-max) of wall time, the
ratio, and the peak resident memory: for each tool the largest process of its tree (GNU
`/usr/bin/time -f %M`, when installed), and hostkit's own VmHWM, read from /proc/PID/status
while it runs; both in separate runs.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

PLAYBOOK = """\
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: GTK_OVERLAY_SCROLLING=0 for login shells
      ansible.builtin.lineinfile:
        path: "{{ home }}/.profile"
        line: export GTK_OVERLAY_SCROLLING=0
        create: true
    - name: no overlay scrollbars in GTK 3
      ansible.builtin.lineinfile:
        path: "{{ home }}/.config/gtk-3.0/settings.ini"
        line: gtk-overlay-scrolling=false
        insertafter: '^\\[Settings\\]'
        create: true
"""

TARGET = 20  # the issue: check all at least 20x faster than the Ansible run


def find_ansible(arg):
    """The ansible-playbook program from --ansible, $HOSTKIT_ANSIBLE_VENV or PATH, or None."""
    candidates = []
    if arg:
        candidates.append(arg)
    elif os.environ.get("HOSTKIT_ANSIBLE_VENV"):
        candidates.append(os.environ["HOSTKIT_ANSIBLE_VENV"])
    else:
        found = shutil.which("ansible-playbook")
        if found:
            candidates.append(found)
    for c in candidates:
        if os.path.isdir(c):
            c = os.path.join(c, "bin", "ansible-playbook")
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return os.path.abspath(c)
    return None


def default_hostkit():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(repo, "target"))
    return os.path.join(target, "release", "hostkit")


def timed(argv, env, sample=False):
    """Runs argv: (seconds, exit code, tree max RSS KiB, its own VmHWM KiB or None, stderr).
    With `sample`, polls its VmHWM meanwhile (which costs CPU: not in the timed runs)."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
        status = f"/proc/{proc.pid}/status"
        hwm = None
        while True:
            pid, wstatus, usage = os.wait4(proc.pid, os.WNOHANG if sample else 0)
            if pid:
                break
            try:
                with open(status) as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            hwm = max(hwm or 0, int(line.split()[1]))
            except (OSError, ValueError):
                pass
            time.sleep(0.0002)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(wstatus)
        err.seek(0)
        return seconds, proc.returncode, usage.ru_maxrss, hwm, err.read().decode(errors="replace")


def summary(values):
    return statistics.median(values), min(values), max(values)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hostkit", default=default_hostkit(), help="the hostkit binary")
    ap.add_argument("--ansible", help="ansible-playbook, or a virtual environment holding it")
    ap.add_argument("--before", metavar="HOSTKIT",
                    help="another hostkit build (e.g. an older commit's) to time `check all` with too")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--json", help="write every measurement to this file")
    args = ap.parse_args()

    hostkit = os.path.abspath(args.hostkit)
    if not os.access(hostkit, os.X_OK):
        sys.exit(f"{hostkit} is not built: cargo build --release (or --hostkit PATH)")
    ansible = find_ansible(args.ansible)
    if ansible is None:
        print("ansible-playbook not found (--ansible PATH, or HOSTKIT_ANSIBLE_VENV): "
              "skipping the comparison, timing hostkit alone")

    work = tempfile.mkdtemp(prefix="hostkit-bench-")
    try:
        home = os.path.join(work, "home")
        os.makedirs(home)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("XDG_", "GSETTINGS_", "ANSIBLE_", "SUDO_", "PKEXEC_"))}
        env.update(HOME=home, NO_COLOR="1", ANSIBLE_NOCOLOR="1",
                   ANSIBLE_HOME=os.path.join(work, "ansible"),
                   ANSIBLE_LOCAL_TEMP=os.path.join(work, "ansible", "tmp"),
                   ANSIBLE_RETRY_FILES_ENABLED="0")
        playbook = os.path.join(work, "playbook.yml")
        with open(playbook, "w") as f:
            f.write(PLAYBOOK)

        commands = {
            "hostkit check all": [hostkit, "check", "all"],
            "hostkit apply gtk-legacy --dry-run": [hostkit, "apply", "gtk-legacy", "--dry-run"],
        }
        if args.before:
            commands["hostkit check all (--before build)"] = [
                os.path.abspath(args.before), "check", "all"]
        if ansible:
            # The interpreter next to ansible-playbook: no interpreter discovery, no warning.
            python = os.path.join(os.path.dirname(ansible), "python3")
            if not os.access(python, os.X_OK):
                python = sys.executable
            commands["ansible-playbook --check --diff"] = [
                ansible, "-i", "localhost,", playbook, "--check", "--diff",
                "-e", f"home={home}", "-e", f"ansible_python_interpreter={python}"]

        raw = {name: [] for name in commands}
        for run in range(args.runs + 1):  # run 0 warms the caches and is not counted
            for name, argv in commands.items():
                seconds, code, _, _, stderr = timed(argv, env)
                # check: 0 or 1 (something would change); ansible --check: 0 (changed is fine).
                if code not in (0, 1) or (name.startswith("ansible") and code != 0):
                    sys.exit(f"{name} failed (exit {code}):\n{stderr}")
                if run:
                    raw[name].append({"seconds": seconds, "exit": code})
        # Peak memory, in separate runs: polling VmHWM costs CPU, and a process forked from this
        # (large) Python carries Python's RSS in its ru_maxrss, so the tree's largest process is
        # measured by GNU time (`/usr/bin/time -f %M`), a small parent, when it is installed.
        gnu_time = shutil.which("time", path="/usr/bin:/bin")
        for name, argv in commands.items():
            for _ in range(3):
                if name.startswith("hostkit"):
                    raw[name].append({"vm_hwm_kib": timed(argv, env, sample=True)[3]})
                if gnu_time:
                    with tempfile.NamedTemporaryFile("r") as out:
                        timed([gnu_time, "-f", "%M", "-o", out.name, *argv], env)
                        raw[name].append({"tree_max_rss_kib": int(out.read().split()[-1])})

        print(f"\n{args.runs} runs each, interleaved; {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.2f}\n")
        print("| command | wall median (min-max) | peak RSS, largest process of the tree | own VmHWM |")
        print("|---|---|---|---|")
        for name, runs in raw.items():
            med, lo, hi = summary([r["seconds"] for r in runs if "seconds" in r])
            rsss = [r["tree_max_rss_kib"] for r in runs if "tree_max_rss_kib" in r]
            rss = f"{max(rsss) / 1024:.1f} MiB" if rsss else "- (no /usr/bin/time)"
            hwms = [r["vm_hwm_kib"] for r in runs if r.get("vm_hwm_kib")]
            own = f"{max(hwms) / 1024:.1f} MiB" if hwms and name.startswith("hostkit") else "-"
            print(f"| `{name}` | {med * 1000:.0f} ms ({lo * 1000:.0f}-{hi * 1000:.0f}) "
                  f"| {rss} | {own} |")
        result = {"runs": args.runs, "cpus": os.cpu_count(), "raw": raw}
        if ansible:
            a = statistics.median(r["seconds"] for r in raw["ansible-playbook --check --diff"]
                                  if "seconds" in r)
            for name in ("hostkit check all", "hostkit apply gtk-legacy --dry-run"):
                h = statistics.median(r["seconds"] for r in raw[name] if "seconds" in r)
                ratio = a / h
                result[f"ratio {name}"] = ratio
                verdict = ""
                if name == "hostkit check all":
                    verdict = f" (target {TARGET}x: {'met' if ratio >= TARGET else 'NOT met'})"
                print(f"\n`{name}` is {ratio:.1f}x faster than `ansible-playbook --check --diff`"
                      f"{verdict}")
        if args.before:
            now = statistics.median(r["seconds"] for r in raw["hostkit check all"] if "seconds" in r)
            old = statistics.median(r["seconds"] for r in raw["hostkit check all (--before build)"]
                                    if "seconds" in r)
            result["speedup over --before"] = old / now
            print(f"\n`hostkit check all`: {old * 1000:.0f} ms with the --before build, "
                  f"{now * 1000:.0f} ms now ({old / now:.1f}x)")
            if ansible:
                print(f"the --before build was {a / old:.1f}x faster than ansible-playbook")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

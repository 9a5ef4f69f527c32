#!/bin/sh
# Makes the small image the example playbook configures: DIR (default /tmp/hostkit-demo) with
# an etc/passwd naming alice (uid ALICE_UID, default 1000), her home with a .profile, and an
# /etc/environment. Refuses a DIR that exists and is not empty.
set -eu
root=${1:-/tmp/hostkit-demo}
uid=${ALICE_UID:-1000}
if [ -d "$root" ] && [ -n "$(ls -A "$root")" ]; then
    echo "demo-root.sh: $root exists and is not empty" >&2
    exit 2
fi
mkdir -p "$root/etc" "$root/home/alice"
printf 'root:x:0:0:root:/root:/bin/sh\nalice:x:%s:%s:Alice:/home/alice:/bin/bash\n' \
    "$uid" "$uid" >"$root/etc/passwd"
printf '# ~/.profile: login shells\n[ -f ~/.bashrc ] && . ~/.bashrc\n' >"$root/home/alice/.profile"
printf 'PATH="/usr/local/bin:/usr/bin:/bin"\n' >"$root/etc/environment"
chown -R "$uid:$uid" "$root/home/alice"
echo "$root"

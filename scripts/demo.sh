#!/usr/bin/env bash
# Builds everything (release) and runs the main job on this machine's own tools.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --workspace --release --bins --locked
H=target/release/hatchery

step() { printf '\n== %s\n$ %s\n' "$1" "$2"; }

step "who and where am I inside the sandbox" "hatchery run -- /bin/sh -c 'id; ls /; cat /proc/self/uid_map'"
$H run -- /bin/sh -c 'id; ls /; cat /proc/self/uid_map'

step "a private hostname, network and pid namespace" "hatchery run --unshare-all --hostname sandbox -- /bin/sh -c 'hostname; tail -n +3 /proc/net/dev; ls /proc | grep -c ^[0-9]'"
$H run --unshare-all --hostname sandbox -- /bin/sh -c 'hostname; tail -n +3 /proc/net/dev; echo "processes visible: $(ls /proc | grep -c "^[0-9]")"'

step "the host's secrets are not there" "hatchery run -- /bin/sh -c 'ls /root /home; cat /etc/shadow'"
$H run -- /bin/sh -c 'ls /root /home 2>&1; cat /etc/shadow 2>&1' || true

step "a runaway command is stopped by the wall-time limit" "hatchery run --limit-walltime 0.5 -- /bin/sh -c 'while :; do :; done'"
$H run --limit-walltime 0.5 -- /bin/sh -c 'while :; do :; done' || echo "exit code $? (128+SIGKILL)"

step "gzip a host file through the sandbox, read-only input, output on stdout" "hatchery run -b /usr/share/common-licenses -- gzip -c /usr/share/common-licenses/GPL-3 | wc -c"
$H run -b /usr/share/common-licenses -- /bin/gzip -c /usr/share/common-licenses/GPL-3 | wc -c

step "with -v the plan is printed" "hatchery run -v -- /bin/true"
$H run -v -- /bin/true

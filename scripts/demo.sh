#!/usr/bin/env bash
# Builds everything (release) and runs the main job on this machine's own tools.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --workspace --release --bins --locked
H=target/release/hatchery

step() { printf '\n== %s\n$ %s\n' "$1" "$2"; }

# The main job: every manual page of this machine, decompressed by the machine's own gzip, each
# in a fresh sandbox from a warm pool; one corrupt input shows a failure report.
WORK=$(mktemp -d /tmp/hatchery-demo.XXXXXX)
mapfile -t PAGES < <(find /usr/share/man/man[1-8] -name '*.gz' -type f | sort | head -n 400)
printf 'this is not gzip' > "$WORK/corrupt.1.gz"
step "hatchery map: ${#PAGES[@]} man pages + 1 corrupt file through gzip -dc, 2 at a time" \
     "hatchery map -j 2 --limit-walltime 5 --out $WORK/out <files> -- gzip -dc > $WORK/report.jsonl"
set +e
$H map -j 2 --limit-walltime 5 --out "$WORK/out" "${PAGES[@]}" "$WORK/corrupt.1.gz" -- gzip -dc > "$WORK/report.jsonl"
code=$?; echo "exit code $code (1: some file failed)"; [ "$code" -le 1 ] || exit "$code"
set -e
echo "outputs: $(ls "$WORK/out" | wc -l) files, $(du -sh "$WORK/out" | cut -f1)"
echo "first report line:"; head -n 1 "$WORK/report.jsonl"
echo "the failure:"; grep '"ok":false' "$WORK/report.jsonl"
cmp <(gzip -dc "${PAGES[0]}") "$WORK/out/$(basename "${PAGES[0]}")" && echo "outputs match gzip -dc run directly"

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

rm -rf "$WORK"

#!/usr/bin/env bash
# Installs the peers `hatchery bench` compares against, only where missing: bubblewrap, crun and
# firejail (Debian packages), hakoniwa-cli 1.8.0 (crates.io, `cargo install --locked`; it links
# libseccomp) and sandlock (PyPI). `hatchery bench` skips, with the reason, any peer still
# missing afterwards.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need=()
for pkg in bubblewrap crun firejail libseccomp-dev pkg-config python3 python3-pip; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bench-peers: installing ${need[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v hakoniwa >/dev/null 2>&1 || ! hakoniwa --version 2>/dev/null | grep -q '1\.8\.0'; then
    echo "bench-peers: cargo install hakoniwa-cli --version 1.8.0 --locked"
    cargo install hakoniwa-cli --version 1.8.0 --locked
fi

if ! python3 -c 'import sandlock' >/dev/null 2>&1; then
    echo "bench-peers: pip install sandlock"
    python3 -m pip install --quiet sandlock 2>/dev/null \
        || python3 -m pip install --quiet --break-system-packages sandlock
fi
echo "bench-peers: bwrap $(command -v bwrap || echo missing), crun $(command -v crun || echo missing)," \
     "firejail $(command -v firejail || echo missing), hakoniwa $(command -v hakoniwa || echo missing)," \
     "sandlock $(python3 -c 'import sandlock, os; print(os.path.dirname(sandlock.__file__))' 2>/dev/null || echo missing)"

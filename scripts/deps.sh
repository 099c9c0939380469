#!/usr/bin/env bash
# Installs what building and testing hatchery needs on Debian 12, only where missing:
# a Rust toolchain (rustup, when cargo is absent), libseccomp-dev, pkg-config, uidmap
# (newuidmap/newgidmap), bubblewrap (benchmark comparison), python3 (test listing), passt
# (pasta: user-mode networking), and real helpers the tests run: imagemagick with ghostscript and
# fonts (the security-policy and text-rendering tests).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need=()
for pkg in libseccomp-dev pkg-config uidmap bubblewrap python3 gcc libc6-dev util-linux passwd passt \
    imagemagick ghostscript fontconfig fonts-dejavu-core; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ "$(uname -s)" = Linux ] && [ ${#need[@]} -gt 0 ]; then
    echo "deps: installing ${need[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        echo "deps: installing Rust with rustup"
        command -v curl >/dev/null || { $SUDO apt-get install -y -qq curl ca-certificates >/dev/null; }
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal \
            --component rustfmt,clippy
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
fi
if command -v rustup >/dev/null 2>&1; then
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi

#!/usr/bin/env bash
# The whole test suite: formatting, clippy -D warnings, docs, every test as root, then every
# test binary again as an unprivileged user (created here, with /etc/subuid and /etc/subgid
# ranges). Run it as root on Debian 12: `./scripts/test.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR=never

echo "== fmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

echo "== build"
cargo build --workspace --bins --locked

echo "== tests as $(id -un)"
cargo test --workspace --locked -- --test-threads=2

if [ "$(id -u)" -ne 0 ]; then
    echo "== not root: skipping the unprivileged-user pass (run as root to include it)"
    [ "${HATCHERY_TESTS_MUST_RUN:-0}" = 1 ] && { echo "HATCHERY_TESTS_MUST_RUN=1 needs root"; exit 1; }
    exit 0
fi

TEST_USER=hatchery-test
id "$TEST_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$TEST_USER"
grep -q "^$TEST_USER:" /etc/subuid 2>/dev/null || echo "$TEST_USER:300000:65536" >> /etc/subuid
grep -q "^$TEST_USER:" /etc/subgid 2>/dev/null || echo "$TEST_USER:300000:65536" >> /etc/subgid
# An unprivileged pasta (--network pasta) opens /dev/net/tun: restore Debian's default mode.
if [ -c /dev/net/tun ]; then chmod 0666 /dev/net/tun; fi

# Stage the binaries where the test user can read them, whatever the checkout's permissions.
STAGE=$(mktemp -d /tmp/hatchery-unpriv.XXXXXX)
trap 'rm -rf "$STAGE"' EXIT
chmod 755 "$STAGE"
mkdir "$STAGE/deps"
find target/debug -maxdepth 1 -type f -perm -u+x -exec cp {} "$STAGE/" \;
mkdir "$STAGE/examples"
find target/debug/examples -maxdepth 1 -type f -perm -u+x -exec cp {} "$STAGE/examples/" \;
cargo test --workspace --locked --no-run --message-format=json 2>/dev/null \
    | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m.get("profile", {}).get("test"):
        print(m["executable"])
' > "$STAGE/list"
while read -r exe; do cp "$exe" "$STAGE/deps/"; done < "$STAGE/list"
chmod -R a+rX "$STAGE"

echo "== tests as $TEST_USER"
for exe in "$STAGE"/deps/*; do
    echo "-- $(basename "$exe")"
    (cd "$STAGE" && runuser -u "$TEST_USER" -- env HOME="/home/$TEST_USER" \
        HATCHERY_TESTS_MUST_RUN="${HATCHERY_TESTS_MUST_RUN:-0}" \
        HATCHERY_LANDLOCK_ABI="${HATCHERY_LANDLOCK_ABI:-}" "$exe" --test-threads=2)
done
echo "== all tests passed, as root and as $TEST_USER"

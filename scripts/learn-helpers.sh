#!/usr/bin/env bash
# `hatchery learn` on ten real helpers from Debian packages: learn each on one sample input, run
# it under the learned profile on another input of the same kind, count the profile's system
# calls against podman's, and check that eight attacks a compromised helper would try (read
# /etc/passwd, write /usr, TCP connect, a netlink socket, a user namespace, ptrace, the init's
# environment, a home) are still refused under its profile. Prints a markdown table. Installs the helpers when missing (Debian 12): ./scripts/learn-helpers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
. scripts/deps.sh
need=()
for pkg in imagemagick ghostscript ffmpeg poppler-utils libimage-exiftool-perl file jq python3 \
    gzip tar gcc libc6-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ -x target/release/hatchery ] || cargo build --release --workspace --bins
H=$PWD/target/release/hatchery
W=$(mktemp -d /tmp/hatchery-learn.XXXXXX)
trap 'rm -rf "$W"' EXIT
chmod 755 "$W" # the container's root is nobody: the attack program's mount must be readable
cd "$W"
ps() { printf '%%!PS\n/Helvetica findfont 14 scalefont setfont 72 700 moveto (%s) show showpage\n' "$1"; }
/usr/bin/convert -size 64x48 xc:red a.png; /usr/bin/convert -size 90x30 gradient: b.png
/usr/bin/convert a.png a.jpg; /usr/bin/convert -size 30x70 plasma: b.jpg
ps "first sample" > a.ps; ps "another text, longer" > b.ps
gs -q -dSAFER -sDEVICE=pdfwrite -o a.pdf a.ps; gs -q -dSAFER -sDEVICE=pdfwrite -o b.pdf b.ps
ffmpeg -v error -f lavfi -i sine=f=440:d=0.3 a.wav; ffmpeg -v error -f lavfi -i sine=f=880:d=0.7 -ac 2 b.wav
echo '{"a": 1, "b": [1, 2]}' > a.json; echo '{"a": "text", "c": {"d": null}}' > b.json
seq 1 3000 | gzip > a.gz; seq 7 90000 | gzip -9 > b.gz
tar -cf a.tar a.json a.png; tar -cf b.tar b.json b.png b.jpg
# The attacks, as a compromised helper would make them: raw calls from a static program run
# under the helper's own learned profile (plus one read-only mount holding the program).
mkdir attack
gcc -static -O2 -o attack/attack "$REPO/tests/fixtures/helper-attacks.c"
printf '| helper | command | learned calls | of podman | other input | blocked under the profile |\n|---|---|---|---|---|---|\n'
run() { # name sample other -- command...
    local name=$1 a=$2 b=$3; shift 4
    local p="$W/$name.toml"
    if ! "$H" learn -o "$p" "$a" -- "$@" 2>"$W/$name.learn.err"; then
        printf '| %s | `%s` | learn failed: %s | | | |\n' "$name" "$*" "$(tail -1 "$W/$name.learn.err")"; return
    fi
    local calls of
    calls=$(sed -n '/^syscalls = \[/,/^\]/p' "$p" | grep -c '^  "')
    of=$(grep -o 'calls the samples made (of its [0-9]*' "$p" | grep -o '[0-9]*$')
    local other="ok"
    if ! "$H" run -c "$p" < "$b" > "$W/$name.out" 2>"$W/$name.err" || [ ! -s "$W/$name.out" ]; then
        other="FAILED: $(tail -1 "$W/$name.err")"
    fi
    # The same profile, plus the attack program's directory read-only.
    { cat "$p"; printf '\n[[mounts]]\nsource = "%s"\n' "$W/attack"; } > "$W/$name.attack.toml"
    local blocked
    if won=$("$H" run -c "$W/$name.attack.toml" -- "$W/attack/attack" </dev/null 2>"$W/$name.attack.err"); then
        blocked="NO: $(echo "$won" | tr '\n' ',')"
    elif [ "$(head -1 <<<"$won")" != ran ]; then
        blocked="(attack program did not run: $(tail -1 "$W/$name.attack.err"))"
    else
        blocked="all 8"
    fi
    printf '| %s | `%s` | %s | %s | %s | %s |\n' "$name" "$*" "$calls" "$of" "$other" "$blocked"
}
run convert a.png b.png -- /usr/bin/convert png:- jpg:-
run ffprobe a.wav b.wav -- /usr/bin/ffprobe -v error -show_format -i pipe:0
run pdftotext a.pdf b.pdf -- /usr/bin/pdftotext - -
run gs a.ps b.ps -- /usr/bin/gs -q -dSAFER -dBATCH -sDEVICE=png16m -o - -
run exiftool a.jpg b.jpg -- /usr/bin/exiftool -
run python3 a.json b.json -- /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin))'
run file a.png b.pdf -- /usr/bin/file -
run jq a.json b.json -- /usr/bin/jq .
run gzip a.gz b.gz -- /usr/bin/gzip -dc
run tar a.tar b.tar -- /usr/bin/tar -tvf -

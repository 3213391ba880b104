#!/usr/bin/env bash
# Build signetd's Debian package and check what it installs.
set -euo pipefail
shopt -s inherit_errexit

PROG=${0##*/}
REPO_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
# Pinned, so a new release of the tool cannot change the package under CI's feet.
CARGO_DEB_VERSION=3.8.0
# systemd-analyze security's exposure, times ten, above which the check fails: the unit
# scores 1.4 (docs/packaging.md); a change that weakens its sandbox must say so here.
MAX_EXPOSURE=15

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    cat <<EOF
Usage: scripts/$PROG

Build target/debian/signetd_VERSION-1_ARCH.deb and check it:
  1. the release binary (cargo build --release --locked; nothing to do when
     scripts/quickstart.sh built it already, as in .ci/run);
  2. its man pages (signetd man --out) and shell completions (signetd completions)
     into target/package/;
  3. cargo deb --no-build (cargo-deb $CARGO_DEB_VERSION, installed with
     'cargo install --locked' if missing: a few minutes the first time);
  4. the package's files, modes and conffiles (dpkg-deb --contents, extracted into
     a throwaway root), its postinst, the unit (systemd-analyze verify, and
     systemd-analyze security --offline with exposure at most $MAX_EXPOSURE/10), the
     man pages (man -l) and the bash completions (bash, complete -p).

Installs missing system tools (dpkg-dev, man-db, systemd for systemd-analyze) with
apt-get when run as root, and prints the command otherwise. See docs/packaging.md.
EOF
    exit 0
fi

log() { printf '==> %s\n' "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}
cd "$REPO_ROOT"

missing=()
command -v dpkg-shlibdeps >/dev/null || missing+=(dpkg-dev)
command -v man >/dev/null || missing+=(man-db)
command -v systemd-analyze >/dev/null || missing+=(systemd)
if ((${#missing[@]} > 0)); then
    ((EUID == 0)) || die "missing: sudo apt-get install -y ${missing[*]}"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q </dev/null >/dev/null || die "'apt-get update' failed"
    apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >/dev/null ||
        die "'apt-get install -y ${missing[*]}' failed"
fi
if [[ $(cargo deb --version 2>/dev/null) != *" $CARGO_DEB_VERSION"* ]]; then
    log "cargo install cargo-deb $CARGO_DEB_VERSION (a few minutes, once)"
    cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION" </dev/null ||
        die "cannot install cargo-deb"
fi

log "cargo build --release --locked"
cargo build --release --locked --quiet
bin=target/release/signetd

log "man pages and completions into target/package/"
rm -rf target/package
mkdir -p target/package/man target/package/completions
"$bin" man --out target/package/man >/dev/null
# Debian policy: man pages gzipped, reproducibly (no name, no time stamp).
gzip -9n target/package/man/*.1
"$bin" completions bash >target/package/completions/signetd
"$bin" completions zsh >target/package/completions/_signetd
"$bin" completions fish >target/package/completions/signetd.fish

log "cargo deb --no-build"
rm -rf target/debian
deb=$(cargo deb --no-build --locked --quiet --output target/debian/ | tail -n 1)
[[ -f $deb ]] || die "cargo deb printed no package path (got: $deb)"

# ---------------------------------------------------------------- checks

root=$(mktemp -d "${TMPDIR:-/tmp}/signetd-deb.XXXXXX")
trap 'rm -rf -- "$root"' EXIT
fail() { die "$deb: $*"; }

log "checking $deb"
contents=$(dpkg-deb --contents "$deb")
dpkg-deb --extract "$deb" "$root"
dpkg-deb --control "$deb" "$root/DEBIAN"

# path mode: each must be in the package, a regular file, with that mode.
expect=(
    "usr/bin/signetd 755"
    "usr/lib/systemd/system/signetd.service 644"
    "etc/signetd/signetd.toml 644"
    "usr/share/signetd/ceremony/root.sh 755"
    "usr/share/signetd/ceremony/issuer-key.sh 755"
    "usr/share/signetd/ceremony/common.sh 755"
    "usr/share/man/man1/signetd.1.gz 644"
    "usr/share/man/man1/signetd-config-check.1.gz 644"
    "usr/share/man/man1/signetd-keys-rotate.1.gz 644"
    "usr/share/bash-completion/completions/signetd 644"
    "usr/share/zsh/vendor-completions/_signetd 644"
    "usr/share/fish/vendor_completions.d/signetd.fish 644"
    "usr/share/doc/signetd/packaging.md 644"
    "usr/share/doc/signetd/copyright 644"
)
for line in "${expect[@]}"; do
    read -r path mode <<<"$line"
    [[ -f $root/$path && ! -L $root/$path ]] || fail "no file /$path"
    got=$(stat -c %a "$root/$path")
    [[ $got == "$mode" ]] || fail "/$path has mode $got, not $mode"
    grep -q " \./$path\$" <<<"$contents" || fail "dpkg-deb --contents does not list ./$path"
done
for script in scripts/ceremony/*.sh; do
    [[ -f $root/usr/share/signetd/ceremony/${script##*/} ]] || fail "ceremony script ${script##*/} missing"
done
# softhsm/dev-token.sh keeps PINs in the token directory: for tests, never shipped.
[[ ! -e $root/usr/share/signetd/softhsm ]] || fail "ships softhsm/ (the throwaway dev token maker)"
pages=$(find target/package/man -name '*.1.gz' | wc -l)
shipped=$(find "$root/usr/share/man/man1" -name '*.1.gz' | wc -l)
((pages == shipped && pages > 10)) || fail "ships $shipped man pages of $pages"
# Everything the package installs is root's.
owners=$(awk '{print $2}' <<<"$contents" | sort -u)
[[ $owners == root/root || $owners == 0/0 ]] || fail "files not owned by root (uid and gid 0): $owners"

grep -qx /etc/signetd/signetd.toml "$root/DEBIAN/conffiles" || fail "/etc/signetd/signetd.toml is not a conffile"
grep -q 'adduser --system' "$root/DEBIAN/postinst" || fail "postinst does not create the signetd user"
grep -q 'deb-systemd-helper' "$root/DEBIAN/postinst" || fail "postinst lacks the systemd unit snippet"
# Not enabled or started on install (cargo-deb re-enables on upgrade only a unit the
# operator had enabled: "was-enabled"): the token and keys come first.
enables=$(grep -c 'deb-systemd-helper enable' "$root/DEBIAN/postinst" || true)
was_enabled=$(grep -c 'deb-systemd-helper --quiet was-enabled' "$root/DEBIAN/postinst" || true)
if ((enables > was_enabled)) || grep -q 'deb-systemd-invoke start' "$root/DEBIAN/postinst"; then
    fail "postinst enables or starts the unit: it must wait for the token and keys"
fi
grep -q '^Depends:.*adduser' "$root/DEBIAN/control" || fail "control does not depend on adduser"

"$root/usr/bin/signetd" --version | grep -q "^signetd $(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)\$" ||
    fail "/usr/bin/signetd --version does not print the package's version"
cmp -s "$root/etc/signetd/signetd.toml" config.example.toml || fail "/etc/signetd/signetd.toml is not config.example.toml"

log "man -l on the shipped pages"
for page in signetd.1.gz signetd-config-check.1.gz; do
    warnings=$(MANWIDTH=80 LC_ALL=C.UTF-8 man --warnings -P cat -l "$root/usr/share/man/man1/$page" 2>&1 >/dev/null) ||
        fail "man -l $page failed: $warnings"
    [[ -z $warnings ]] || fail "man -l $page: $warnings"
done
MANWIDTH=80 man -P cat -l "$root/usr/share/man/man1/signetd.1.gz" | grep -q 'signetd-config-check\|signetd-config(1)' ||
    fail "signetd(1) does not list the config command"

log "bash completions"
# shellcheck disable=SC2016 # expanded by the inner bash
bash -c 'source "$1" && complete -p signetd' bash "$root/usr/share/bash-completion/completions/signetd" |
    grep -q -- '-F _signetd signetd' || fail "the bash completions do not load"

log "systemd-analyze verify and security on the shipped unit"
# The unit as shipped, but naming the extracted binary: verify checks that ExecStart=
# and ExecReload= name an executable, and (MANPATH) that Documentation=man:signetd(1)
# is a page the package ships. (--root would need a whole systemd tree in the root.)
unit=$root/signetd.service
sed "s|/usr/bin/signetd|$root/usr/bin/signetd|g" "$root/usr/lib/systemd/system/signetd.service" >"$unit"
verify=$(MANPATH=$root/usr/share/man systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify: $verify"
[[ -z $verify ]] || fail "systemd-analyze verify: $verify"
security=$(systemd-analyze security --offline=yes --threshold="$MAX_EXPOSURE" "$unit" 2>&1) ||
    fail "systemd-analyze security: exposure over $MAX_EXPOSURE/10 (or it failed):
$(grep -E '✗|Overall' <<<"$security")"
score=$(grep -o 'Overall exposure level for signetd.service: [0-9.]*' <<<"$security" | awk '{print $NF}')

printf '%s: PASS (%s, %s files, %s man pages; systemd-analyze security %s)\n' \
    "$PROG" "$deb" "$(grep -c '^-' <<<"$contents")" "$shipped" "$score"

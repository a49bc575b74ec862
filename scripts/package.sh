#!/usr/bin/env bash
# Builds the Debian package target/debian/tsb-pkcs11_<version>_<arch>.deb with dpkg-deb from one
# build of the `dist` profile (fat LTO; an existing up-to-date build is reused). TSB_PKCS11_PROFILE
# names another profile: scripts/package-test.sh uses `dev`, the build scripts/test.sh has made
# (target/debug; the dependencies are not compiled a second time):
#   /usr/lib/<multiarch>/pkcs11/libtsb_pkcs11.so        the PKCS#11 module
#   /usr/share/p11-kit/modules/tsb-pkcs11.module         its p11-kit registration (critical: no)
#   /usr/bin/tsb-pkcs11                                  doctor, keys, requests, config init
#   /usr/lib/tsb-pkcs11/notation-pkcs11                  the Notation plugin (see docs/notation.md
#                                                        for the one line that installs it for a user),
#                                                        beside a link to the module
#   /usr/share/doc/tsb-pkcs11/                           README, docs/*.md, example configuration
# Prints the path of the .deb on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/packages.sh
ensure_packages dpkg-deb:dpkg strip:binutils

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
[ -n "$version" ] || { echo "no [workspace.package] version in Cargo.toml" >&2; exit 1; }
arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch 2>/dev/null || echo "$(uname -m)-linux-gnu")
repository=$(sed -n '/^\[workspace.package\]/,/^\[/s/^repository *= *"\(.*\)"/\1/p' Cargo.toml)

profile=${TSB_PKCS11_PROFILE:-dist}
if [ "$profile" = dev ] || [ "$profile" = debug ]; then
  # The tests' build: cargo's `dev` profile lives in target/debug. Selected as scripts/test.sh's
  # `cargo build --workspace` selects (cargo unifies the dependencies' features over the packages
  # one command builds: the three packages alone would compile most dependencies again).
  profile=dev
  rel=${CARGO_TARGET_DIR:-target}/debug
  select=(--workspace --lib --bins)
else
  rel=${CARGO_TARGET_DIR:-target}/$profile
  select=(-p tsb-pkcs11 -p tsb-pkcs11-command -p notation-pkcs11)
fi
echo "== cargo build --profile $profile (tsb-pkcs11, tsb-pkcs11-command, notation-pkcs11)" >&2
cargo build --profile "$profile" -q "${select[@]}" >&2

# The module is its own crate (module/), without the command's code or clap: every process
# that loads it maps it. Panic locations name the source files linked in.
grep -q clap_builder "$rel/tsb-pkcs11" || { echo "no clap in $rel/tsb-pkcs11: the check below sees nothing" >&2; exit 1; }
if grep -q -e clap_builder -e cli/doctor/ "$rel/libtsb_pkcs11.so"; then
  echo "$rel/libtsb_pkcs11.so contains command code (clap or command/src/cli)" >&2; exit 1
fi
stage=target/debian/stage
rm -rf "$stage"
mkdir -p "$stage/DEBIAN"
install -D -m 0644 "$rel/libtsb_pkcs11.so" "$stage/usr/lib/$multiarch/pkcs11/libtsb_pkcs11.so"
install -D -m 0755 "$rel/tsb-pkcs11" "$stage/usr/bin/tsb-pkcs11"
install -D -m 0755 "$rel/notation-pkcs11" "$stage/usr/lib/tsb-pkcs11/notation-pkcs11"
# The plugin loads libtsb_pkcs11.so from its own (resolved) folder: a user's symbolic link to
# the plugin (docs/notation.md) then needs no `module=`.
ln -s "../$multiarch/pkcs11/libtsb_pkcs11.so" "$stage/usr/lib/tsb-pkcs11/libtsb_pkcs11.so"
strip --strip-unneeded "$stage/usr/lib/$multiarch/pkcs11/libtsb_pkcs11.so" \
  "$stage/usr/bin/tsb-pkcs11" "$stage/usr/lib/tsb-pkcs11/notation-pkcs11"

# p11-kit looks for a relative module name in its module folder (/usr/lib/<multiarch>/pkcs11).
# Not critical: a failure of this module never stops a p11-kit application. No enable-in /
# disable-in: any application may need the token, and without a configuration the module offers
# no slot and stays silent.
install -d "$stage/usr/share/p11-kit/modules"
cat > "$stage/usr/share/p11-kit/modules/tsb-pkcs11.module" <<'EOF'
# tsb-pkcs11: keys of Securosys Primus HSMs through the TSB REST API.
# Configure it with `tsb-pkcs11 config init`; without a configuration it offers no slot.
# To load it only in some programs, add e.g. "enable-in: ssh, openvpn" (see pkcs11.conf(5)).
module: libtsb_pkcs11.so
critical: no
EOF
chmod 0644 "$stage/usr/share/p11-kit/modules/tsb-pkcs11.module"

doc="$stage/usr/share/doc/tsb-pkcs11"
install -d "$doc/docs" "$doc/examples"
install -m 0644 README.md "$doc/README.md"
install -m 0644 docs/*.md "$doc/docs/"
gzip -9n -c CHANGELOG.md > "$doc/changelog.gz"
cat > "$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: tsb-pkcs11
Source: $repository

Files: *
License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF
cat > "$doc/examples/config.json" <<'EOF'
{
  "restApi": "https://tsb.example.com:8080",
  "authType": "TOKEN",
  "token": "env:TSB_JWT",
  "pkcs11": {
    "tokenLabel": "TSB"
  }
}
EOF
chmod 0644 "$doc/copyright" "$doc/examples/config.json"

size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<EOF
Package: tsb-pkcs11
Version: $version
Architecture: $arch
Maintainer: tsb-pkcs11 maintainers <maintainers@tsb-pkcs11.invalid>
Installed-Size: $size
Depends: libc6
Recommends: p11-kit
Section: utils
Priority: optional
Homepage: $repository
Description: PKCS#11 module for keys in Securosys HSMs through the TSB REST API
 libtsb_pkcs11.so signs with keys held in Securosys Primus HSMs and CloudHSM
 through the Transaction Security Broker (TSB) REST API, approvals (Smart Key
 Attributes) included. It is registered with p11-kit. The tsb-pkcs11 command
 checks a setup (doctor), lists keys with their PKCS#11 URIs and manages
 approval requests; notation-pkcs11 is a Notation signing plugin.
EOF
(cd "$stage" && find usr -type f -print0 | sort -z | xargs -0 md5sum > DEBIAN/md5sums)

out="target/debian/tsb-pkcs11_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$out" >&2
echo "$out"

#!/usr/bin/env bash
# Installs the Debian packages given as "command-or-file:package" pairs when missing
# (sourced by demo.sh and test.sh). Uses sudo when not root.
ensure_packages() {
  local need=() pair probe pkg
  for pair in "$@"; do
    probe=${pair%%:*}; pkg=${pair#*:}
    if [[ $probe == /* ]]; then [ -e "$probe" ] && continue
    elif [[ $probe == dpkg=* ]]; then dpkg -s "${probe#dpkg=}" >/dev/null 2>&1 && continue
    else command -v "$probe" >/dev/null && continue
    fi
    need+=("$pkg")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  echo "== installing Debian packages: ${need[*]}"
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
}

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
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -o DPkg::Lock::Timeout=600 -y -qq "${need[@]}" >/dev/null
}

# Adds Debian's "<codename>-backports" suite (pkcs11-provider comes from there on Debian 12),
# derived from the machine's own Debian apt source: same URI, same keyring, suite name
# "<codename>-backports". Reads deb822 (/etc/apt/sources.list.d/*.sources) and one-line
# (/etc/apt/sources.list, *.list) formats; the mirror's address is never written into the repository.
ensure_backports() {
  local codename uri line out=/etc/apt/sources.list.d/tsb-pkcs11-backports.sources
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  [ -n "$codename" ] || { echo "ensure_backports: no VERSION_CODENAME in /etc/os-release" >&2; return 1; }
  if grep -rqsE "(^|[[:space:]])${codename}-backports([[:space:]]|$)" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    return 0
  fi
  # deb822: the URIs of the stanza whose Suites has the bare codename.
  uri=$(awk -v c="$codename" '
    /^[[:space:]]*$/ { if (u != "" && s) { print u; exit } u=""; s=0; next }
    /^URIs:/   { u=$2 }
    /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == c) s=1 }
    END { if (u != "" && s) print u }' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
  if [ -z "$uri" ]; then
    # one-line format: "deb [options] URI codename components..."
    line=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      sed -E 's/\[[^]]*\]//' | awk -v c="$codename" '$1 == "deb" && $3 == c { print $2; exit }')
    uri=$line
  fi
  [ -n "$uri" ] || { echo "ensure_backports: no Debian apt source for $codename found" >&2; return 1; }
  echo "== adding ${codename}-backports (same source as ${codename})"
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  printf 'Types: deb\nURIs: %s\nSuites: %s-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$uri" "$codename" | $sudo tee "$out" >/dev/null
  $sudo apt-get update -qq
}

# ensure_venv DIR PIP_PACKAGE...: a Python virtual environment (Debian's python3) holding the
# given pip packages; installs them when one does not import. Needs python3-venv.
ensure_venv() {
  local dir=$1; shift
  local py=/usr/bin/python3; [ -x "$py" ] || py=python3
  [ -x "$dir/bin/python" ] || "$py" -m venv "$dir"
  local pkg missing=()
  # Each argument is a PyPI name, or NAME=MODULE when the import name differs.
  local spec mod
  for spec in "$@"; do
    pkg=${spec%%=*}
    mod=${spec#*=}
    [ "$mod" = "$spec" ] && mod=${pkg#python-}
    "$dir/bin/python" -c "import $mod" 2>/dev/null || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "== installing pip packages into $dir: ${missing[*]}"
  "$dir/bin/python" -m pip install -q --disable-pip-version-check "${missing[@]}"
}

#!/usr/bin/env bash
# Installs what the tests need and is not already there: redis-server and PostgreSQL for the
# probe tests; bubblewrap, dumb-init, iproute2 and nftables for the runtime test (tests/e2e),
# which runs the real bundler in namespaces; and the pinned Node libraries (npm ci), yarn
# among them (the bundler image's yarn runs the migration).
# Run as root on Debian 12 with Node 20 present. Idempotent: a second run installs
# nothing and makes no network calls. Python packages come from the Makefile's venv, except
# checkov, which gets its own (last step).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

have_postgres() {
  command -v initdb >/dev/null 2>&1 && return 0
  # Debian's postgresql package keeps initdb off PATH, under a versioned directory.
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

apt_packages=()
command -v redis-server >/dev/null 2>&1 || apt_packages+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || apt_packages+=(redis-tools)
have_postgres || apt_packages+=(postgresql)
# The postgres image's entrypoint runs initdb through nss_wrapper when its uid has no /etc/passwd
# entry, as the manifest's uid has none; the runtime test's stand-in does the same with this.
compgen -G '/usr/lib/*/libnss_wrapper.so' >/dev/null || apt_packages+=(libnss-wrapper)
# Lints scripts/*.sh (tests/test_make_up.py).
command -v shellcheck >/dev/null 2>&1 || apt_packages+=(shellcheck)
# The runtime test's sandbox: each container under bubblewrap, PID 1 as the image has it.
for pair in bwrap:bubblewrap dumb-init:dumb-init ip:iproute2 nft:nftables nsenter:util-linux setpriv:util-linux; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || [[ -x /usr/sbin/${pair%%:*} ]] || apt_packages+=("${pair#*:}")
done

if ((${#apt_packages[@]})); then
  if [[ ${EUID} -ne 0 ]]; then
    echo "install-test-deps: need root to apt-get install ${apt_packages[*]}" >&2
    exit 1
  fi
  echo "install-test-deps: installing ${apt_packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d exit 101 stops the packages from starting system-wide services:
  # the tests start their own throwaway servers on free ports.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [[ ! -e ${policy} ]]; then
    printf '#!/bin/sh\nexit 101\n' >"${policy}"
    chmod 0755 "${policy}"
    created_policy=1
  fi
  trap '[[ ${created_policy} -eq 1 ]] && rm -f "${policy}"' EXIT
  apt-get install -y -qq --no-install-recommends "${apt_packages[@]}"
fi

for tool in node npm; do
  command -v "${tool}" >/dev/null 2>&1 || {
    echo "install-test-deps: ${tool} not found; install Node.js 20 first" >&2
    exit 1
  }
done

# npm ci wipes and reinstalls node_modules, so only run it when the lock file
# changed since the last install (npm writes node_modules/.package-lock.json).
cd "${repo_root}"
stamp=node_modules/.package-lock.json
if [[ ! -f ${stamp} || package-lock.json -nt ${stamp} || package.json -nt ${stamp} ]]; then
  echo "install-test-deps: npm ci"
  # No package here needs an install script (msgpackr-extract is an optional speed-up).
  npm ci --no-audit --no-fund --ignore-scripts
else
  echo "install-test-deps: node_modules up to date"
fi

# checkov (the manifest scan, tests/test_security_scan.py) pins an older `packaging` than pulumi,
# so it lives in its own venv beside the project's. Reinstalled only when the pin changes.
checkov_version=3.3.30
checkov_venv="${repo_root}/.venv-checkov"
if [[ "$("${checkov_venv}/bin/checkov" --version 2>/dev/null)" != "${checkov_version}" ]]; then
  echo "install-test-deps: checkov ${checkov_version} in ${checkov_venv}"
  python3 -m venv "${checkov_venv}"
  "${checkov_venv}/bin/pip" install --quiet --disable-pip-version-check "checkov==${checkov_version}"
else
  echo "install-test-deps: checkov ${checkov_version} up to date"
fi

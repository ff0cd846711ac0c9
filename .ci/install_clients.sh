#!/usr/bin/env bash
# Install the real live-coding clients the live tests drive (jackd2, sclang, scsynth, Sonic Pi).
# Idempotent: packages already present are left alone; safe to call before every test run.
set -euo pipefail

PACKAGES=(jackd2 supercollider-language supercollider-server sonic-pi iproute2)

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install_clients: all present (${PACKAGES[*]})"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
# Without this preseed jackd2's postinst asks whether to enable realtime limits and blocks.
echo "jackd2 jackd/tweak_rt_limits boolean false" | $SUDO debconf-set-selections
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${missing[@]}"
echo "install_clients: installed ${missing[*]}"

#!/usr/bin/env bash
# Installs everything rlmed needs to build, test and benchmark on Debian 12.
# Shared by the README's two commands and by .ci/run, so the three never drift apart.
# Idempotent: packages already present are left alone; apt-get runs only when one is missing.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libeigen3-dev xtensor-dev xtl-dev nlohmann-json3-dev zlib1g-dev libpng-dev libtiff-dev libjpeg-dev libomp-dev
  libcli11-dev doctest-dev libbenchmark-dev
  doxygen
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "rlmed: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "rlmed: dependencies present"

#!/usr/bin/env bash
# One entry point for people and CI on a Debian 12 machine (run as root, or with sudo available):
#   ./hotforge.sh demo    install what is missing, build, build the samples, show Hotforge at work
#   ./hotforge.sh test    install what is missing, build, build the samples, run every test
#   ./hotforge.sh package install what is missing, build, make the Debian packages (build/packages)
#   ./hotforge.sh build | setup | samples | bench | fuzz SECONDS | sanitize
#   ./hotforge.sh realbench [ARGS]  hotforge on real Debian security updates (bench/realbench.py)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${HOTFORGE_BUILD_DIR:-$root/build}
samples_out=$build/samples

# Debian packages, and why: see README.md ("Dependencies").
packages=(
  build-essential cmake ninja-build pkg-config python3
  llvm-19-dev clang-19 lld-19 llvm-19 zlib1g-dev libclang-rt-19-dev
  libzstd-dev zstd libfmt-dev libcli11-dev nlohmann-json3-dev libssl-dev openssl libtomlplusplus-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
  gcc-mingw-w64-x86-64-win32 g++-mingw-w64-x86-64-win32 wine64 libunicorn-dev
  bsdiff xdelta3 binutils time strace xz-utils bzip2
  help2man dpkg-dev
)
# Arm64 builds of libraries the cross-compiled agent links (Debian multiarch); dpkg-shlibdeps
# reads them for the arm64 agent package. libtiff6 and libarchive13 bring the libraries those two
# need, for the live tests on real updates (tests/reallib_test.cpp) under qemu-user.
arm64_packages=(libssl-dev:arm64 libzstd-dev:arm64 libstdc++6:arm64 libtiff6:arm64 libarchive13:arm64)

log() { printf '==> %s\n' "$*" >&2; }

setup() {
  local missing=() sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  # The live tests on real updates (tests/reallib_test.cpp) read the libraries' own test files
  # from their source packages: `apt-get source` needs deb-src lists.
  if ! grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "adding Debian's source package lists (deb-src) for apt-get source"
    local codename
    codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
    printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb-src\nURIs: http://deb.debian.org/debian-security\nSuites: %s-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$codename" "$codename" "$codename" | $sudo tee /etc/apt/sources.list.d/hotforge-src.sources >/dev/null
    $sudo apt-get update -qq
  fi
  for p in "${packages[@]}" "${arm64_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${#missing[@]} Debian packages: ${missing[*]}"
  dpkg --print-foreign-architectures | grep -qx arm64 || $sudo dpkg --add-architecture arm64
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

configure_and_build() {  # configure_and_build DIR [CMAKE_ARGS...] [-- TARGETS...]
  local dir=$1; shift
  local args=() targets=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do args+=("$1"); shift; done
  [ $# -gt 0 ] && shift && targets=("$@")
  cmake -S "$root" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DLLVM_DIR=/usr/lib/llvm-19/lib/cmake/llvm "${args[@]}" >/dev/null
  if [ ${#targets[@]} -gt 0 ]; then cmake --build "$dir" --target "${targets[@]}"; else cmake --build "$dir"; fi
}

build() { setup; configure_and_build "$build"; }

# Builds the samples unless they were built from exactly the sources there now.
samples() {
  local stamp
  stamp=$(cd "$root" && find samples -type f ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum | sha256sum)
  if [ -f "$samples_out/samples.json" ] && [ "$(cat "$samples_out/.stamp" 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  "$root/samples/build.sh" "$samples_out"
  echo "$stamp" >"$samples_out/.stamp"
}

demo() {
  build
  samples
  local hf=$build/cli/hotforge s=$samples_out work
  work=$(mktemp -d)
  log "hotforge inspect: a gcc-built x64 ELF sample, and its stripped copy (.dynsym, .eh_frame and the code)"
  "$hf" inspect "$s/elf-x64-gcc/core.base" | head -n 12
  "$hf" inspect "$s/elf-x64-gcc/stripped/core.base" | tail -n 3
  log "hotforge diff: a bounds-check fix (scenario 1) on x64, a new helper (scenario 3) on Arm64"
  "$hf" diff "$s/elf-x64-gcc/core.base" "$s/elf-x64-gcc/core.fix1"
  "$hf" diff "$s/elf-a64-clang/core.base" "$s/elf-a64-clang/core.fix3"
  log "hotforge diff: a changed initial value of a global needs a restart (exit 3)"
  "$hf" diff "$s/pe-x64/initval.base.dll" "$s/pe-x64/initval.fix6.dll" || true
  log "hotforge build: hotpatch images for ELF x64 and PE Arm64"
  "$hf" build "$s/elf-x64-gcc/core.base" "$s/elf-x64-gcc/core.fix1" -o "$work/core-x64.hfpatch" --sequence 2
  "$hf" build "$s/pe-a64/core.base.dll" "$s/pe-a64/core.fix3.dll" -o "$work/core-a64.hfpatch" --sequence 2
  "$hf" inspect "$work/core-x64.hfpatch"
  log "hotforge keygen, pack, verify: one signed, compressed delivery unit for both"
  "$hf" keygen -o "$work/release"
  SOURCE_DATE_EPOCH=1700000000 "$hf" pack "$work/core-x64.hfpatch" "$work/core-a64.hfpatch" -o "$work/2026-11.hfu" \
    --key "$work/release.pem" --release 2026-11
  "$hf" verify "$work/2026-11.hfu" --pubkey "$work/release.pub.pem" --base "$s/elf-x64-gcc/core.base"
  log "hotforge apply, revert: the unit into a running baseline (the sample's serve mode), and back out"
  export HOTFORGE_STATE_DIR=$work/state
  coproc SERVE { exec "$s/elf-x64-gcc/core.base" serve; }
  local pid=$SERVE_PID
  trap "kill $pid 2>/dev/null || true" EXIT  # also when a step fails
  show_round() {  # one round of the running sample: the line scenario 1 fixes
    local line
    echo r >&"${SERVE[1]}"
    while read -r line <&"${SERVE[0]}" && [ "$line" != hf-round-end ]; do
      case $line in "s1 table_get(16)"*) echo "  process $pid: $line" ;; esac
    done
  }
  show_round
  "$hf" apply --pid "$pid" "$work/2026-11.hfu" --pubkey "$work/release.pub.pem"
  show_round
  "$hf" revert --pid "$pid"
  show_round
  rm -rf "$work"
}

# Both Debian packages with CPack: hotforge (build hosts) and hotforge-target (target hosts).
package() {
  build
  (cd "$build" && cpack -G DEB)
  log "packages: $(ls "$build"/packages/*.deb | tr '\n' ' ')"
}

run_tests() {
  build
  samples
  log "running the tests"
  HOTFORGE_SAMPLES="$samples_out" ctest --test-dir "$build" --output-on-failure -j2
}

sanitize() {
  setup
  local dir=$root/build-asan
  configure_and_build "$dir" -DCMAKE_C_COMPILER=clang-19 -DCMAKE_CXX_COMPILER=clang++-19 -DHOTFORGE_SANITIZE=ON -DHOTFORGE_BENCH=OFF
  samples
  HOTFORGE_SAMPLES="$samples_out" ctest --test-dir "$dir" --output-on-failure -j2
}

fuzz() {
  setup
  local seconds=${1:-60}
  local dir=$root/build-fuzz
  configure_and_build "$dir" -DCMAKE_C_COMPILER=clang-19 -DCMAKE_CXX_COMPILER=clang++-19 -DHOTFORGE_FUZZ=ON \
    -DHOTFORGE_TESTS=OFF -DHOTFORGE_BENCH=OFF -- fuzz_read_image fuzz_unit fuzz_patch_image
  configure_and_build "$build" -- hotforge  # writes the patch images that seed fuzz_patch_image
  samples
  "$root/tests/fuzz/run.sh" "$dir" "$samples_out" "$seconds" "$build/cli/hotforge"
}

bench() {
  build
  samples
  "$root/bench/run.sh" "$build" "$samples_out"
}

# Real Debian security updates (bench/real-updates.list), fetched into $HOTFORGE_DEBCACHE.
realbench() {
  build
  python3 "$root/bench/realbench.py" --hotforge "$build/cli/hotforge" "$@"
}

case "${1:-}" in
  setup) setup ;;
  build) build ;;
  samples) setup; samples ;;
  demo) demo ;;
  test) run_tests ;;
  package) package ;;
  sanitize) sanitize ;;
  fuzz) shift; fuzz "$@" ;;
  bench) bench ;;
  realbench) shift; realbench "$@" ;;
  *) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac

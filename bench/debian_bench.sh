#!/usr/bin/env bash
# debian_bench.sh BUILD_DIR [CACHE_DIR]: Hotforge at the scale of real Debian binaries, next to
# zstd --patch-from and bsdiff (issue 16):
#   - libwebkit2gtk-4.1-0 2.50.6-1~deb12u1 -> deb12u2 (libwebkit2gtk-4.1.so.0.19.9, 88 MiB), a real
#     security update with the same upstream version, and libnode108 18.20.4+dfsg-1~deb12u2 ->
#     deb12u3 (libnode.so.108, 45 MiB): `hotforge diff` at most 3x zstd --patch-from's time and at
#     most 2 x (both inputs) + 100 MiB peak memory;
#   - chromium 156.0.8078.114-1~deb12u1 (/usr/lib/chromium/chromium, 283 MiB): `hotforge inspect`
#     and a self-diff, with >= 95% of the executable code covered by functions.
# Packages are fetched with `apt-get download` into CACHE_DIR/PACKAGE/VERSION (default
# /work/debcache if it exists, else BUILD_DIR/debcache) and unpacked next to the .deb.
# bsdiff is skipped above HOTFORGE_BENCH_BSDIFF_MAX bytes per input (default 64 MiB: it needs about
# 17x the input in memory and minutes per 50 MiB) and capped at HOTFORGE_BENCH_BSDIFF_TIMEOUT s.
# Exit status 1 when a hotforge command fails; missed targets are reported, not fatal.
set -euo pipefail

build=$(cd "${1:?usage: debian_bench.sh BUILD_DIR [CACHE_DIR]}" && pwd)
cache=${2:-}
[ -n "$cache" ] || { if [ -d /work/debcache ]; then cache=/work/debcache; else cache=$build/debcache; fi; }
hf=$build/cli/hotforge
work=$build/debian-bench
bsdiff_max=${HOTFORGE_BENCH_BSDIFF_MAX:-67108864}
bsdiff_timeout=${HOTFORGE_BENCH_BSDIFF_TIMEOUT:-900}
mkdir -p "$work"

# fetch PACKAGE VERSION FILE: unpacks the package (once) and prints the path of FILE in it.
fetch() {
  local dir=$cache/$1/$2
  mkdir -p "$dir"
  if ! ls "$dir"/*.deb >/dev/null 2>&1; then
    (cd "$dir" && apt-get download -q "$1:amd64=$2" >&2)
  fi
  [ -d "$dir/root" ] || { dpkg-deb -x "$dir"/*.deb "$dir/root.tmp" && mv "$dir/root.tmp" "$dir/root"; }
  echo "$dir/root/$3"
}

# measure NAME COMMAND...: runs once under /usr/bin/time; prints and keeps "seconds KiB status".
measure() {
  local name=$1 status=0; shift
  /usr/bin/time -f "%e %M" -o "$work/$name.time" "$@" >"$work/$name.out" 2>"$work/$name.err" || status=$?
  read -r seconds kib < <(tail -n 1 "$work/$name.time")
  echo "$seconds $kib $status" >"$work/$name.result"
  printf '  %-34s %8ss %7d MiB  exit %d\n' "$name" "$seconds" $((kib / 1024)) "$status"
}

failed=0
hotforge_ok() { local s; s=$(cut -d' ' -f3 "$work/$1.result"); [ "$s" = 0 ] || [ "$s" = 3 ] || failed=1; }

coverage() { grep '^code coverage' "$work/$1.out" | sed 's/^/  /' || true; }

pair() {  # pair NAME BASE PATCHED
  local name=$1 base=$2 patched=$3
  local size=$(($(stat -c %s "$base") + $(stat -c %s "$patched")))
  echo "== $name: $(basename "$base"), $(($(stat -c %s "$base") / 1048576)) MiB -> $(($(stat -c %s "$patched") / 1048576)) MiB"
  measure "$name.inspect-base" "$hf" inspect "$base"
  hotforge_ok "$name.inspect-base"
  coverage "$name.inspect-base"
  measure "$name.hotforge-diff" "$hf" diff "$base" "$patched" --json -o "$work/$name.diff.json"
  hotforge_ok "$name.hotforge-diff"
  measure "$name.zstd-patch-from" zstd -q -f --patch-from="$base" "$patched" -o "$work/$name.zst"
  if [ "$(stat -c %s "$base")" -le "$bsdiff_max" ]; then
    measure "$name.bsdiff" timeout "$bsdiff_timeout" bsdiff "$base" "$patched" "$work/$name.bsdiff"
  else
    echo "  $name.bsdiff: skipped, the input is above HOTFORGE_BENCH_BSDIFF_MAX ($bsdiff_max bytes)"
  fi
  python3 - "$work" "$name" "$size" <<'PY'
import json, sys
work, name, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
def result(tool):
    seconds, kib, status = open(f"{work}/{name}.{tool}.result").read().split()
    return float(seconds), int(kib) * 1024
hf_t, hf_m = result("hotforge-diff")
z_t, z_m = result("zstd-patch-from")
budget = 2 * size + 100 * 2**20
try:
    summary = json.load(open(f"{work}/{name}.diff.json"))
except OSError:
    summary = {}
counts = {k: len(v) for k, v in summary.items() if isinstance(v, list)}
print(f"  hotforge diff {hf_t:.2f}s = {hf_t / max(z_t, 0.01):.2f}x zstd --patch-from ({z_t:.2f}s; target <= 3x: "
      f"{'met' if hf_t <= 3 * z_t else 'MISSED'}); peak {hf_m / 2**20:.0f} MiB of a {budget / 2**20:.0f} MiB budget "
      f"({'met' if hf_m <= budget else 'MISSED'}); zstd peak {z_m / 2**20:.0f} MiB")
print(f"  diff lists: {counts}")
PY
}

echo "== debian_bench: hotforge $hf, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), cache $cache"
lib=usr/lib/x86_64-linux-gnu
pair webkit "$(fetch libwebkit2gtk-4.1-0 2.50.6-1~deb12u1 $lib/libwebkit2gtk-4.1.so.0.19.9)" \
  "$(fetch libwebkit2gtk-4.1-0 2.50.6-1~deb12u2 $lib/libwebkit2gtk-4.1.so.0.19.9)"
pair libnode "$(fetch libnode108 18.20.4+dfsg-1~deb12u2 $lib/libnode.so.108)" \
  "$(fetch libnode108 18.20.4+dfsg-1~deb12u3 $lib/libnode.so.108)"
chromium=$(fetch chromium 156.0.8078.114-1~deb12u1 usr/lib/chromium/chromium)
echo "== chromium: $(($(stat -c %s "$chromium") / 1048576)) MiB, inspect and self-diff"
measure chromium.inspect "$hf" inspect "$chromium"
hotforge_ok chromium.inspect
coverage chromium.inspect
measure chromium.self-diff "$hf" diff "$chromium" "$chromium" --json -o "$work/chromium.diff.json"
hotforge_ok chromium.self-diff
measure chromium.zstd-patch-from zstd -q -f --patch-from="$chromium" "$chromium" -o "$work/chromium.zst"
echo "  chromium.bsdiff: skipped, the input is above HOTFORGE_BENCH_BSDIFF_MAX ($bsdiff_max bytes)"
exit "$failed"

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
# Every pair also runs through xdelta3 and bsdiff; bsdiff is skipped above HOTFORGE_BENCH_BSDIFF_MAX
# bytes per input (default 128 MiB: it needs about 9x the input in memory and takes 15 min on
# chromium) and capped at HOTFORGE_BENCH_BSDIFF_TIMEOUT s. It ends with one table of the figures.
# The time ratio is taken between the fastest of HOTFORGE_BENCH_RUNS (default 3) runs of
# `hotforge diff` and of zstd, run in turn (the machine is shared: one run may be a slow one); the
# peak memory is the largest of the runs. HOTFORGE_BENCH_PAIRS (default "webkit libnode chromium")
# picks the pairs; the chromium self-diff runs once.
# Exit status 1 when a hotforge command fails; missed targets are reported, not fatal.
set -euo pipefail

build=$(cd "${1:?usage: debian_bench.sh BUILD_DIR [CACHE_DIR]}" && pwd)
cache=${2:-}
[ -n "$cache" ] || { if [ -d /work/debcache ]; then cache=/work/debcache; else cache=$build/debcache; fi; }
hf=$build/cli/hotforge
work=$build/debian-bench
bsdiff_max=${HOTFORGE_BENCH_BSDIFF_MAX:-134217728}
bsdiff_timeout=${HOTFORGE_BENCH_BSDIFF_TIMEOUT:-900}
runs=${HOTFORGE_BENCH_RUNS:-3}
pairs=${HOTFORGE_BENCH_PAIRS:-webkit libnode chromium}
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

# measure_fastest RUNS NAME COMMAND...: as measure, RUNS times; keeps the fastest time, the
# largest peak memory and the worst exit status.
measure_fastest() {
  local times=$1 name=$2 best="" peak=0 worst=0; shift 2
  for _ in $(seq "$times"); do
    measure "$name" "$@" >/dev/null
    read -r seconds kib status <"$work/$name.result"
    if [ -z "$best" ] || [ "$(echo "$seconds < $best" | bc)" = 1 ]; then best=$seconds; fi
    [ "$kib" -gt "$peak" ] && peak=$kib
    if [ "$status" != 0 ] && [ "$status" != 3 ]; then worst=$status
    elif [ "$worst" = 0 ] || [ "$worst" = 3 ]; then worst=$status; fi
  done
  echo "$best $peak $worst" >"$work/$name.result"
  printf '  %-34s %8ss %7d MiB  exit %d  (fastest of %d)\n' "$name" "$best" $((peak / 1024)) "$worst" "$times"
}

failed=0
hotforge_ok() { local s; s=$(cut -d' ' -f3 "$work/$1.result"); [ "$s" = 0 ] || [ "$s" = 3 ] || failed=1; }

coverage() { grep '^code coverage' "$work/$1.out" | sed 's/^/  /' || true; }

delta_tools="zstd-patch-from xdelta3 bsdiff"

pair() {  # pair NAME BASE PATCHED [RUNS]: inspect BASE, then diff the pair with hotforge and the delta tools
  local name=$1 base=$2 patched=$3 times=${4:-$runs}
  echo "== $name: $(basename "$base"), $(($(stat -c %s "$base") / 1048576)) MiB -> $(($(stat -c %s "$patched") / 1048576)) MiB"
  echo "$base $patched" >"$work/$name.inputs"
  measure "$name.inspect" "$hf" inspect "$base"
  hotforge_ok "$name.inspect"
  coverage "$name.inspect"
  measure_fastest "$times" "$name.hotforge-diff" "$hf" diff "$base" "$patched" --json -o "$work/$name.diff.json"
  hotforge_ok "$name.hotforge-diff"
  # From stdin: zstd refuses a file that is also its dictionary (the chromium self-diff).
  measure_fastest "$times" "$name.zstd-patch-from" sh -c \
    'exec zstd -q -f --patch-from="$1" --stream-size="$(stat -c %s "$2")" -o "$3" <"$2"' zstd "$base" "$patched" "$work/$name.zst"
  measure "$name.xdelta3" xdelta3 -e -f -s "$base" "$patched" "$work/$name.xdelta3"
  rm -f "$work/$name.bsdiff.result"
  if [ "$(stat -c %s "$base")" -le "$bsdiff_max" ]; then
    measure "$name.bsdiff" timeout "$bsdiff_timeout" bsdiff "$base" "$patched" "$work/$name.bsdiff"
  else
    echo "  $name.bsdiff: skipped, the input is above HOTFORGE_BENCH_BSDIFF_MAX ($bsdiff_max bytes)"
  fi
}

echo "== debian_bench: hotforge $hf, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), cache $cache"
lib=usr/lib/x86_64-linux-gnu
for name in $pairs; do
  case $name in
  webkit)
    pair webkit "$(fetch libwebkit2gtk-4.1-0 2.50.6-1~deb12u1 $lib/libwebkit2gtk-4.1.so.0.19.9)" \
      "$(fetch libwebkit2gtk-4.1-0 2.50.6-1~deb12u2 $lib/libwebkit2gtk-4.1.so.0.19.9)" ;;
  libnode)
    pair libnode "$(fetch libnode108 18.20.4+dfsg-1~deb12u2 $lib/libnode.so.108)" \
      "$(fetch libnode108 18.20.4+dfsg-1~deb12u3 $lib/libnode.so.108)" ;;
  chromium)
    chromium=$(fetch chromium 156.0.8078.114-1~deb12u1 usr/lib/chromium/chromium)
    pair chromium "$chromium" "$chromium" 1 ;;
  *) echo "debian_bench: no pair named $name (webkit, libnode, chromium)" >&2; exit 2 ;;
  esac
done

# The table: per pair the inputs, each tool's time and peak RSS, and the issue's two ratios.
# shellcheck disable=SC2086
python3 - "$work" $pairs <<'PY'
import json, os, sys
work, names = sys.argv[1], sys.argv[2:]
def result(name, tool):
    try:
        seconds, kib, status = open(f"{work}/{name}.{tool}.result").read().split()
    except OSError:
        return None
    return float(seconds), int(kib) / 1024, int(status)
def cell(r):
    if r is None:
        return "skipped"
    return f"{r[0]:.2f} s, {r[1]:.0f} MiB" + ("" if r[2] in (0, 3) else f" (exit {r[2]})")
print("\n| pair | inputs MiB | hotforge diff | zstd --patch-from | xdelta3 | bsdiff | diff / zstd time | peak / budget |")
print("|---|---|---|---|---|---|---|---|")
for name in names:
    base, patched = open(f"{work}/{name}.inputs").read().split()
    sizes = [os.path.getsize(base) / 2**20, os.path.getsize(patched) / 2**20]
    budget = 2 * sum(sizes) + 100
    diff, zstd = result(name, "hotforge-diff"), result(name, "zstd-patch-from")
    try:
        summary = json.load(open(f"{work}/{name}.diff.json"))["summary"]
        counts = f" ({summary['matched']} matched, {summary['changed']} changed)"
    except (OSError, KeyError, ValueError):
        counts = ""
    ratio = f"{diff[0] / max(zstd[0], 0.01):.2f}x" + (" (<= 3x)" if diff[0] <= 3 * zstd[0] else " (over 3x)")
    memory = f"{diff[1]:.0f} / {budget:.0f} MiB" + (" (within)" if diff[1] <= budget else " (over)")
    print(f"| {name}{counts} | {sizes[0]:.1f} + {sizes[1]:.1f} | {cell(diff)} | {cell(zstd)} | "
          f"{cell(result(name, 'xdelta3'))} | {cell(result(name, 'bsdiff'))} | {ratio} | {memory} |")
PY
exit "$failed"

#!/usr/bin/env bash
# pack_bench.sh BUILD_DIR SAMPLES_DIR: delivery units against plain zstd and against delta tools.
#
# 1. Throughput: `hotforge pack` and `hotforge verify` against `zstd -LEVEL` and `zstd -d` on the
#    same data (all sample binaries as one unit / one multi-frame .zst, and libLLVM.so.19.1), with
#    one worker on both sides and with one worker per core on both sides. MB/s is input MB (1e6
#    bytes of uncompressed images) per wall-clock second of the whole command, files included.
# 2. Size: a unit holding the patched binary of each baseline/patched sample pair, against
#    `zstd -19` of the same file, `bsdiff` and `zstd -19 --patch-from=BASE`. A unit carries full
#    images for now (the emitter that makes small patch images is not written yet), so it is the
#    size of a compressed binary, not of a delta.
#
# HOTFORGE_BENCH_PACK_LEVELS (default "19 3") chooses the levels; HOTFORGE_BENCH_PACK_LARGE=0 skips
# libLLVM (each level-19 run of it takes a minute or more).
set -euo pipefail
build=$1 samples=$2
hf=$build/cli/hotforge
levels=${HOTFORGE_BENCH_PACK_LEVELS:-19 3}
large=$(readlink -f /usr/lib/x86_64-linux-gnu/libLLVM.so.19.1)
cores=$(nproc)
work=$(mktemp -d "${TMPDIR:-/tmp}/hotforge-pack-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$hf" keygen -o "$work/key" >/dev/null

# timed OUT_PREFIX CMD...: runs CMD, leaves "seconds peak_kib" in OUT_PREFIX.time (wall time from
# date, to the millisecond; peak RSS from /usr/bin/time).
timed() {
  local out=$1 start end kib
  shift
  start=$(date +%s%N)
  /usr/bin/time -f "%M" -o "$out.rss" "$@" >/dev/null
  end=$(date +%s%N)
  kib=$(tail -n 1 "$out.rss")
  echo "$(awk -v ns=$((end - start)) 'BEGIN { printf "%.3f", ns / 1e9 }') $kib" >"$out.time"
}
rate() { # rate BYTES SECONDS -> MB/s
  awk -v b="$1" -v s="$2" 'BEGIN { if (s < 0.001) s = 0.001; printf "%.1f", b / 1e6 / s }'
}
row() { # row LABEL BYTES TIMEFILE [OUTPUT_SIZE]
  local seconds kib
  read -r seconds kib <"$3"
  printf '  %-44s %8ss %9s MB/s  peak RSS %5d MiB%s\n' "$1" "$seconds" "$(rate "$2" "$seconds")" $((kib / 1024)) \
    "${4:+  -> $4 bytes}"
}

# One data set: every sample binary, under unique names.
mkdir -p "$work/samples"
find "$samples" -type f \( -name '*.dll' -o -name '*.exe' -o -perm -u+x \) -not -path '*/obj/*' | sort |
  while read -r f; do
    rel=${f#"$samples"/}
    cp "$f" "$work/samples/${rel//\//_}"
  done
sample_files=("$work"/samples/*)
sample_bytes=$(cat "${sample_files[@]}" | wc -c)

bench_set() { # bench_set LABEL FILES...
  local label=$1
  shift
  local bytes
  bytes=$(cat "$@" | wc -c)
  echo "== pack/verify throughput: $label ($# files, $((bytes / 1048576)) MiB)"
  for level in $levels; do
    for jobs in 1 "$cores"; do
      timed "$work/z" zstd -q -f -"$level" -T"$jobs" -c "$@"
      zstd -q -"$level" -T"$jobs" -c "$@" >"$work/set.zst"
      row "zstd -$level -T$jobs" "$bytes" "$work/z.time" "$(stat -c %s "$work/set.zst")"
      timed "$work/p" "$hf" pack "$@" -o "$work/set.hfu" --key "$work/key.pem" --level "$level" -j "$jobs"
      row "hotforge pack --level $level -j $jobs" "$bytes" "$work/p.time" "$(stat -c %s "$work/set.hfu")"
    done
    timed "$work/zd" zstd -q -d -c "$work/set.zst"
    row "zstd -d (level $level frames)" "$bytes" "$work/zd.time"
    timed "$work/v" "$hf" verify "$work/set.hfu" --pubkey "$work/key.pub.pem"
    row "hotforge verify (level $level unit)" "$bytes" "$work/v.time"
  done
}

bench_set "all sample binaries" "${sample_files[@]}"
if [ "${HOTFORGE_BENCH_PACK_LARGE:-1}" != 0 ]; then
  cp "$large" "$work/$(basename "$large")"
  bench_set "$(basename "$large")" "$work/$(basename "$large")"
fi

echo "== unit size against delta tools: the patched binary of each baseline/patched pair"
printf '  %-30s %9s %9s %9s %9s %11s\n' "pair (target/base -> patched)" "patched" "unit" "zstd-19" "bsdiff" "patch-from"
total_unit=0 total_zstd=0 total_bsdiff=0 total_from=0 pairs=0
for target in elf-x64-gcc elf-a64-gcc pe-x64 pe-a64; do
  dir=$samples/$target
  [ -d "$dir" ] || continue
  ext=""
  [ -f "$dir/core.base.dll" ] && ext=".dll"
  base=$dir/core.base$ext
  [ -f "$base" ] || continue
  for patched in "$dir"/core.fix*"$ext"; do
    [ -f "$patched" ] || continue
    "$hf" pack "$patched" -o "$work/pair.hfu" --key "$work/key.pem" --level 19 >/dev/null
    zstd -q -19 -f -c "$patched" >"$work/pair.zst"
    bsdiff "$base" "$patched" "$work/pair.bsdiff"
    zstd -q -19 -f --patch-from="$base" -c "$patched" >"$work/pair.from" 2>/dev/null
    u=$(stat -c %s "$work/pair.hfu") z=$(stat -c %s "$work/pair.zst")
    b=$(stat -c %s "$work/pair.bsdiff") f=$(stat -c %s "$work/pair.from")
    printf '  %-30s %9d %9d %9d %9d %11d\n' "$target/$(basename "$patched")" "$(stat -c %s "$patched")" "$u" "$z" "$b" "$f"
    total_unit=$((total_unit + u)) total_zstd=$((total_zstd + z))
    total_bsdiff=$((total_bsdiff + b)) total_from=$((total_from + f)) pairs=$((pairs + 1))
  done
done
printf '  %-30s %9s %9d %9d %9d %11d\n' "total ($pairs pairs)" "" "$total_unit" "$total_zstd" "$total_bsdiff" "$total_from"
echo "  (a unit also carries a manifest of ~0.6 KB and a 64-byte signature per file; units hold full images until"
echo "   the emitter produces patch images, so they are compared here with what a delta would cost)"

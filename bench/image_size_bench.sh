#!/usr/bin/env bash
# image_size_bench.sh BUILD_DIR SAMPLES_DIR [LARGE_DIR]: hotpatch image sizes next to byte-level
# patches of the same pairs (bsdiff, xdelta3 -9, zstd --patch-from at its default level).
set -euo pipefail
build=$1 samples=$2 large=${3:-}
hotforge=$build/cli/hotforge
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

size() { stat -c %s "$1"; }

row() {  # row LABEL BASE PATCHED
  local label=$1 base=$2 patched=$3
  if ! "$hotforge" build "$base" "$patched" -o "$work/image" --json >"$work/image.json" 2>"$work/err"; then
    printf '%-34s %s\n' "$label" "refused: $(head -c 90 "$work/err" | tr '\n' ' ')"
    return
  fi
  bsdiff "$base" "$patched" "$work/p.bsdiff"
  xdelta3 -9 -f -e -s "$base" "$patched" "$work/p.xd3"
  zstd -q -f --patch-from="$base" "$patched" -o "$work/p.zst"
  local image code data meta
  image=$(size "$work/image")
  read -r code data meta < <(python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["sizes"]; print(s["code"], s["data"], s["metadata"])' "$work/image.json")
  local payload=$((code + data + meta))
  printf '%-34s %7d %6d %5d %6d %8d %8d %8d %8d  %5.2f %5.2f\n' "$label" "$image" "$code" "$data" "$meta" "$payload" \
    "$(size "$work/p.bsdiff")" "$(size "$work/p.xd3")" "$(size "$work/p.zst")" \
    "$(echo "$(size "$work/p.bsdiff") / $payload" | bc -l)" "$(echo "$(size "$work/p.zst") / $payload" | bc -l)"
}

printf '%-34s %7s %6s %5s %6s %8s %8s %8s %8s  %5s %5s\n' pair image code data meta payload bsdiff xdelta3 zstd \
  bsd/pay zst/pay
for target in elf-x64-gcc elf-x64-clang elf-a64-gcc elf-a64-clang pe-x64 pe-a64; do
  ext=""
  case $target in pe-*) ext=.dll ;; esac
  for fix in 1 3 4 5 9 12 13; do
    base=$samples/$target/core.base$ext patched=$samples/$target/core.fix$fix$ext
    [ -f "$base" ] && [ -f "$patched" ] && row "$target core fix$fix" "$base" "$patched"
  done
  base=$samples/$target/exc.base$ext patched=$samples/$target/exc.fix11$ext
  [ -f "$base" ] && [ -f "$patched" ] && row "$target exc fix11" "$base" "$patched"
done
if [ -n "$large" ] && [ -f "$large/base.elf" ]; then
  row "large generated program" "$large/base.elf" "$large/patched.elf"
fi
echo "payload = code + data + metadata bytes the image carries; the file adds page alignment of its segments."

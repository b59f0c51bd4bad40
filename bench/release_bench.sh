#!/usr/bin/env bash
# release_bench.sh BUILD_DIR SAMPLES_DIR: `hotforge release` on a generated release of >= 200 pairs,
# with --jobs 1, --jobs 2 (and one job per core when there are more cores), and the cached rerun.
#
# The release is two trees, v1/ (baselines) and v2/ (patched builds), paired by relative path:
# - HOTFORGE_BENCH_RELEASE_COPIES (default 10) copies of the sample pairs of the six ELF and PE
#   targets (core with a fix that changes from copy to copy, initval fix6 which needs a restart,
#   exc fix11, live fix14; PE DLLs with their PDBs): 22 pairs a copy. Each copy gets its own
#   trailing bytes, so no two pairs have the same content.
# - HOTFORGE_BENCH_RELEASE_MEDIUM (default 8) copies of a generated C program with
#   HOTFORGE_BENCH_RELEASE_FUNCTIONS functions (default 3000; gen_large_program.py and
#   build_large.sh, cached in BUILD_DIR/bench-release/medium: about 15 s the first time).
# Every run must give byte-identical units and summary.json (apart from the cached flags).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=$(cd "$1" && pwd)
samples=$(cd "$2" && pwd)
hf=$build/cli/hotforge
copies=${HOTFORGE_BENCH_RELEASE_COPIES:-10}
medium_copies=${HOTFORGE_BENCH_RELEASE_MEDIUM:-8}
functions=${HOTFORGE_BENCH_RELEASE_FUNCTIONS:-3000}
persist=$build/bench-release
work=$(mktemp -d "${TMPDIR:-/tmp}/hotforge-release-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
export SOURCE_DATE_EPOCH=1790000000

now() { date +%s%N; }
secs() { awk -v ns="$1" 'BEGIN { printf "%.2f", ns / 1e9 }'; }

echo "== release: generate the trees"
gen_start=$(now)
if [ "$medium_copies" -gt 0 ]; then
  mkdir -p "$persist"
  python3 "$here/gen_large_program.py" "$persist/medium" --functions "$functions" --seed 7 >/dev/null
  "$here/build_large.sh" "$persist/medium" >/dev/null
fi
"$hf" keygen -o "$work/key" >/dev/null

# put SRC REL TRAILER: copies SRC to v?/REL with TRAILER appended (both trees get their own call).
put() {
  mkdir -p "$(dirname "$2")"
  cp "$1" "$2"
  printf '%s\n' "$3" >>"$2"
}
fixes=(fix1 fix2 fix3 fix4 fix5 fix7 fix8 fix9 fix10 fix12 fix13)
pairs=0
for ((i = 0; i < copies; i++)); do
  fix=${fixes[$((i % ${#fixes[@]}))]}
  for target in elf-x64-gcc elf-x64-clang elf-a64-gcc elf-a64-clang pe-x64 pe-a64; do
    ext=""
    case $target in pe-*) ext=.dll ;; esac
    for pv in "core $fix" "initval fix6" "exc fix11" "live fix14"; do
      read -r program variant <<<"$pv"
      [ -f "$samples/$target/$program.base$ext" ] || continue
      rel="svc$i/$target/$program$ext"
      tag="hotforge-release-bench $rel"
      put "$samples/$target/$program.base$ext" "$work/v1/$rel" "$tag"
      put "$samples/$target/$program.$variant$ext" "$work/v2/$rel" "$tag"
      if [ -n "$ext" ]; then  # the PDBs, under the names the DLLs' CodeView records give
        cp "$samples/$target/$program.base.pdb" "$work/v1/svc$i/$target/"
        cp "$samples/$target/$program.$variant.pdb" "$work/v2/svc$i/$target/"
      fi
      pairs=$((pairs + 1))
    done
  done
done
for ((i = 0; i < medium_copies; i++)); do
  rel="big/app$i.elf"
  put "$persist/medium/base.elf" "$work/v1/$rel" "hotforge-release-bench $rel"
  put "$persist/medium/patched.elf" "$work/v2/$rel" "hotforge-release-bench $rel"
  pairs=$((pairs + 1))
done
bytes=$(du -sb "$work/v1" "$work/v2" | awk '{ s += $1 } END { print s }')
echo "generated $pairs pairs ($copies copies of 22 sample pairs, $medium_copies copies of a $functions-function program;" \
  "$((bytes / 1048576)) MiB in both trees) in $(secs $(($(now) - gen_start))) s"

# release LABEL OUTDIR CACHE ARGS...: one timed run; prints wall time, peak RSS and the counts.
release() {
  local label=$1 out=$2 cache=$3 start end status=0
  shift 3
  start=$(now)
  /usr/bin/time -f "%M" -o "$work/rss" "$hf" release --baseline-dir "$work/v1" --patched-dir "$work/v2" \
    --release bench -o "$out" --cache-dir "$cache" --key "$work/key.pem" --progress none "$@" >"$work/out.txt" || status=$?
  end=$(now)
  if [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; then
    cat "$work/out.txt" >&2
    echo "release_bench.sh: hotforge release exited with $status" >&2
    exit 1
  fi
  python3 - "$out/summary.json" "$out/times.json" "$label" "$(secs $((end - start)))" "$(tail -n 1 "$work/rss")" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1])); t = json.load(open(sys.argv[2]))["stages"]; tot = s["totals"]
stages = ", ".join(f"{k} {t.get(k, 0):.2f}" for k in ("hash", "cache", "read", "diff", "build", "pack"))
print(f"  {sys.argv[3]:<26} {sys.argv[4]:>7} s  peak RSS {int(sys.argv[5]) // 1024:4d} MiB  "
      f"({tot['hotpatched']} hotpatched, {tot['restart_required']} restart, {tot['unchanged']} unchanged, "
      f"{tot['failed']} failed, {tot['cached']} cached; stage sums: {stages} s)")
EOF
}

# same A B: units and summary.json (cached flags aside) are identical.
same() {
  for unit in "$1"/*.hfu; do cmp -s "$unit" "$2/$(basename "$unit")" || { echo "release_bench.sh: $unit differs" >&2; exit 1; }; done
  python3 - "$1/summary.json" "$2/summary.json" <<'EOF' || { echo "release_bench.sh: summaries differ" >&2; exit 1; }
import json, sys
def load(p):
    s = json.load(open(p))
    for r in s["pairs"]: r.pop("cached")
    s["totals"].pop("cached")
    return s
sys.exit(0 if load(sys.argv[1]) == load(sys.argv[2]) else 1)
EOF
}

echo "== release: $pairs pairs, wall time (cold runs start from an empty cache)"
release "--jobs 1" "$work/out1" "$work/cache1" --jobs 1
release "--jobs 2" "$work/out2" "$work/cache2" --jobs 2
same "$work/out1" "$work/out2"
cores=$(nproc)
if [ "$cores" -gt 2 ]; then
  release "--jobs $cores" "$work/outn" "$work/cachen" --jobs "$cores"
  same "$work/out1" "$work/outn"
fi
release "--jobs 2, cached rerun" "$work/out2" "$work/cache2" --jobs 2
same "$work/out1" "$work/out2"
echo "  units and summaries identical across job counts and the cached rerun"

#!/usr/bin/env bash
# run.sh BUILD_DIR SAMPLES_DIR: the benchmarks, with figures to paste into a closing note.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=$1
large=/usr/lib/x86_64-linux-gnu/libLLVM.so.19.1
echo "== inspect: time (Google Benchmark, in-process readImage)"
HOTFORGE_BENCH_BINARIES="$large:/lib/x86_64-linux-gnu/libc.so.6" "$build/bench/inspect_bench"
echo "== inspect: whole command, wall time and peak memory"
size=$(stat -c %s "$(readlink -f "$large")")
for mode in "" "--json"; do
  /usr/bin/time -f "%e %M" -o /tmp/hotforge-bench.time "$build/cli/hotforge" inspect "$large" $mode >/dev/null
  read -r seconds kib </tmp/hotforge-bench.time
  printf 'hotforge inspect %-7s %s (%d MiB): %ss, peak RSS %d MiB\n' "$mode" "$(basename "$large")" \
    $((size / 1048576)) "$seconds" $((kib / 1024))
done

# The large-program diff: a generated C program (HOTFORGE_BENCH_FUNCTIONS functions, default 100000)
# built twice with gcc -O2, diffed by hotforge and by byte-level delta tools. Generation and build
# are cached in BUILD_DIR/bench-large.
large_dir=$build/bench-large
echo "== diff: generate and build the large program (cached in $large_dir)"
python3 "$here/gen_large_program.py" "$large_dir" --functions "${HOTFORGE_BENCH_FUNCTIONS:-100000}" \
  --seed "${HOTFORGE_BENCH_SEED:-1}"
"$here/build_large.sh" "$large_dir"
# A hotforge failure or a function set that differs from expected.json fails run.sh, after the rest ran.
diff_status=0
"$here/diff_bench.sh" "$build" "$large_dir" || diff_status=$?

# Hotpatch images of the samples and of the large pair, next to byte-level patches.
echo "== build: hotpatch image sizes"
"$here/image_size_bench.sh" "$build" "$2" "$large_dir"

# Delivery units: pack/verify throughput against plain zstd, unit sizes against bsdiff and
# zstd --patch-from (packager/README.md).
"$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/pack_bench.sh" "$build" "$2"
if [ "$diff_status" -ne 0 ]; then
  echo "run.sh: the large-program diff benchmark failed (diff_bench.sh exit $diff_status)" >&2
  exit "$diff_status"
fi

# Real libraries: the Debian security updates of real-updates.list, hotforge diff against the
# delta tools, best of 3, with peak memory (fetched with apt-get download into $HOTFORGE_DEBCACHE).
echo "== diff speed on real security updates"
python3 "$here/realbench.py" --hotforge "$build/cli/hotforge" --speed 3 || echo "run.sh: realbench --speed failed (see above)" >&2

# Release batches: `hotforge release` on a generated release of >= 200 pairs with --jobs 1, --jobs 2
# and the cached rerun (docs/release.md, "Benchmark").
"$here/release_bench.sh" "$build" "$2"

# The ptrace loader under load: apply/revert cycles on the busy live sample, with the threads'
# pause distribution (docs/loader.md). 1,000 cycles here; closing notes quote 10,000.
echo "== apply/revert soak"
"$here/soak_apply.sh" "$build" "$2" "${HOTFORGE_SOAK_CYCLES:-1000}"

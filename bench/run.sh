#!/usr/bin/env bash
# run.sh BUILD_DIR SAMPLES_DIR: the benchmarks, with figures to paste into a closing note.
set -euo pipefail
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

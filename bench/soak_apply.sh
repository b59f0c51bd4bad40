#!/usr/bin/env bash
# soak_apply.sh BUILD_DIR SAMPLES_DIR [CYCLES]: apply/revert cycles (default 10,000) of the live
# sample's fix14 unit on its gcc x64 baseline, running THREADS threads (default 4) that call the
# changed function every millisecond, while BUSY processes (default 2, one per core here) spin.
# SOAK_SECONDS stops it early (the figures then say how many cycles ran).
# Every value the sample prints is checked (baseline or patched, nothing else); any failed command
# or wrong value fails the run. Prints the threads' pause per apply: median, p99, max. Not in ctest:
# ./hotforge.sh bench runs it with 1,000 cycles, closing notes quote a full run.
set -euo pipefail
build=$1 samples=$2 cycles=${3:-10000}
threads=${THREADS:-4} busy=${BUSY:-2} seconds=${SOAK_SECONDS:-0}  # SOAK_SECONDS: stop early after that long
hf=$build/cli/hotforge s=$samples/elf-x64-gcc
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
"$hf" build "$s/live.base" "$s/live.fix14" -o "$work/live.hfpatch" >/dev/null
"$hf" keygen -o "$work/key" >/dev/null
"$hf" pack "$work/live.hfpatch" -o "$work/live.hfu" --key "$work/key.pem" >/dev/null
export HOTFORGE_STATE_DIR=$work/state

# The sample's lines are checked as they come (B baseline, P patched +1000, X anything else).
"$s/live.base" 100000000 1 "$threads" > >(awk '
  $1 == "live" && $3 ~ /^i=/ && $4 ~ /^live_score/ {
    i = substr($3, 3) + 0; split($4, part, "="); v = part[2] + 0; k = i % 8; base = 3 * k * (k + 1) / 2 + (k + 1) * i
    if (v == base) b++; else if (v == base + 1000) p++; else { x++; print "wrong: " $0 > "/dev/stderr" }
  }
  END { printf "%d %d %d\n", b + 0, p + 0, x + 0 > "'"$work/verdicts"'" }') &
live=$!
pids+=("$live")
for ((i = 0; i < busy; i++)); do
  (while :; do :; done) &
  pids+=($!)
done
sleep 0.5

failures=0
start=$(date +%s)
for ((c = 1; c <= cycles; c++)); do
  if ((seconds > 0 && $(date +%s) - start >= seconds)); then cycles=$((c - 1)); break; fi
  if out=$("$hf" apply --pid "$live" "$work/live.hfu" --pubkey "$work/key.pub.pem" --json 2>"$work/err"); then
    sed -n 's/^  "pause_us": \([0-9]*\),$/\1/p' <<<"$out" >>"$work/pauses"
    sed -n 's/^  "stop_us": \([0-9]*\),$/\1/p' <<<"$out" >>"$work/stops"
  else
    failures=$((failures + 1)); echo "cycle $c: apply: $(cat "$work/err")" >&2
  fi
  if ! "$hf" revert --pid "$live" >/dev/null 2>"$work/err"; then
    failures=$((failures + 1)); echo "cycle $c: revert: $(cat "$work/err")" >&2
  fi
  if ((c % 1000 == 0)); then echo "$c cycles, $((($(date +%s) - start))) s" >&2; fi
done
kill -0 "$live" || { echo "the sample died" >&2; exit 1; }
kill "$live"
wait "$live" 2>/dev/null || true
sleep 0.5
read -r b p x <"$work/verdicts"
# percentile P of the numbers in FILE
pick() { sort -n "$2" | awk -v p="$1" '{ v[NR] = $1 } END { i = int((p * NR + 99) / 100); print v[i < 1 ? 1 : i] }'; }
n=$(wc -l <"$work/pauses")
echo "soak: $cycles apply/revert cycles, $threads threads, $busy spinning processes, load $(cut -d' ' -f1 /proc/loadavg)"
echo "soak: $failures failed commands; values: $b baseline, $p patched, $x wrong"
echo "soak: threads paused per apply (us): median $(pick 50 "$work/pauses"), p99 $(pick 99 "$work/pauses"), max $(pick 100 "$work/pauses") ($n applies)"
echo "soak: of which until every thread had stopped (us): median $(pick 50 "$work/stops"), p99 $(pick 99 "$work/stops"), max $(pick 100 "$work/stops")"
[ "$failures" -eq 0 ] && [ "$x" -eq 0 ] && [ "$p" -gt 0 ]

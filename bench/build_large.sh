#!/usr/bin/env bash
# build_large.sh OUTDIR: builds the two trees gen_large_program.py wrote into OUTDIR (base/, patched/)
# with gcc -O2 -fPIE -pie into OUTDIR/base.elf and OUTDIR/patched.elf, compiling in parallel
# (HOTFORGE_BENCH_JOBS, default one job per core).
#
# A patched source that is byte-identical to its base source reuses the base object, as make or
# ccache would (the compiler runs in the tree directory on a relative name, so the object does not
# depend on which tree it came from); HOTFORGE_BENCH_FULL_REBUILD=1 compiles every file of both trees.
# Nothing is rebuilt when both binaries exist and OUTDIR/build.stamp matches the generator stamp,
# the compiler and the flags.
set -euo pipefail

out=${1:?usage: build_large.sh OUTDIR}
out=$(cd "$out" && pwd)
cc=${CC:-gcc}
cflags="-O2 -fPIE"
ldflags="-pie"
jobs=${HOTFORGE_BENCH_JOBS:-$(nproc)}

[ -f "$out/gen.stamp" ] || { echo "build_large.sh: $out/gen.stamp missing: run gen_large_program.py first" >&2; exit 1; }
stamp="$(cat "$out/gen.stamp")
cc=$($cc --version | head -n 1) cflags=$cflags ldflags=$ldflags"
if [ -f "$out/base.elf" ] && [ -f "$out/patched.elf" ] && [ "$(cat "$out/build.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "build_large.sh: $out/base.elf and patched.elf are up to date ($(cat "$out/build.log" 2>/dev/null))"
  exit 0
fi
rm -f "$out/build.stamp" "$out/base.elf" "$out/patched.elf"
rm -rf "$out/obj"
mkdir -p "$out/obj/base" "$out/obj/patched"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# compile TREE FILE...: one compiler per file, $jobs at a time.
compile() {
  local tree=$1; shift
  [ $# -gt 0 ] || return 0
  printf '%s\n' "$@" | xargs -P "$jobs" -n 1 sh -c 'cd "$1" && exec '"$cc $cflags"' -c "$3" -o "$2/${3%.c}.o"' \
    sh "$out/$tree" "$out/obj/$tree"
}

mapfile -t sources < <(cd "$out/base" && ls -- *.c)
t0=$(now)
compile base "${sources[@]}"
t1=$(now)
recompile=()
reused=0
for f in "${sources[@]}"; do
  if [ -z "${HOTFORGE_BENCH_FULL_REBUILD:-}" ] && cmp -s "$out/base/$f" "$out/patched/$f"; then
    cp "$out/obj/base/${f%.c}.o" "$out/obj/patched/${f%.c}.o"
    reused=$((reused + 1))
  else
    recompile+=("$f")
  fi
done
compile patched "${recompile[@]}"
t2=$(now)
pids=()
for tree in base patched; do
  (cd "$out/obj/$tree" && $cc $ldflags -o "$out/$tree.elf" "${sources[@]/%.c/.o}") &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
t3=$(now)
summary="base: ${#sources[@]} files compiled in $(elapsed "$t0" "$t1")s; patched: ${#recompile[@]} compiled, $reused reused, in $(elapsed "$t1" "$t2")s; both linked in $(elapsed "$t2" "$t3")s; total $(elapsed "$t0" "$t3")s with $jobs jobs"
echo "$summary" >"$out/build.log"
printf '%s\n' "$stamp" >"$out/build.stamp"
echo "build_large.sh: $summary"

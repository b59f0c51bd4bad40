#!/usr/bin/env bash
# The Debian packages, installed into a scratch root with dpkg-deb -x and run from there:
# `hotforge --version`, and hotforge-target applying a unit (built and packed by the installed
# hotforge) to a running sample and reverting it. Also: the target tool links no LLVM, nothing
# installed carries an RPATH, and dpkg-shlibdeps filled in Depends.
# Usage: HOTFORGE_SAMPLES=DIR package_test.sh BUILD_DIR. The packages are made by cpack unless
# BUILD_DIR/packages already holds ones newer than the programs they package.
set -euo pipefail
build=$1 samples=${HOTFORGE_SAMPLES:?set HOTFORGE_SAMPLES to the built samples}
fail() { echo "FAIL: $*" >&2; exit 1; }

packages=$build/packages
deb() { ls "$packages"/"$1"_*.deb 2>/dev/null | head -n1; }
stale=0
for p in hotforge hotforge-target; do
  [ -n "$(deb $p)" ] || stale=1
done
[ $stale = 1 ] || [ "$build/cli/hotforge" -nt "$(deb hotforge)" ] || [ "$build/loader/hotforge-target" -nt "$(deb hotforge-target)" ] \
  || [ "$build/loader/agent/libhotforge-agent.so" -nt "$(deb hotforge-target)" ] && stale=1
if [ $stale = 1 ]; then
  # Several test processes may get here at once: one cpack at a time.
  exec 9>"$build/.package-lock"
  flock 9
  (cd "$build" && cpack -G DEB >/dev/null) || fail "cpack -G DEB failed"
  flock -u 9
fi

work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
root=$work/root
for p in hotforge hotforge-target; do
  file=$(deb $p)
  [ -f "$file" ] || fail "no $p package in $packages"
  depends=$(dpkg-deb -f "$file" Depends)
  case $depends in *libc6*) ;; *) fail "$p: Depends was not computed by dpkg-shlibdeps: '$depends'" ;; esac
  dpkg-deb -x "$file" "$root"
  echo "$p: Depends: $depends"
done
# The Arm64 agent, when it was built: its own arm64 package, dependencies from arm64 libraries.
if [ -f "$build/loader/agent/aarch64/libhotforge-agent.so" ]; then
  arm64=$(deb hotforge-agent)
  [ -f "$arm64" ] || fail "no hotforge-agent (arm64) package in $packages"
  [ "$(dpkg-deb -f "$arm64" Architecture)" = arm64 ] || fail "hotforge-agent is not an arm64 package"
  case $(dpkg-deb -f "$arm64" Depends) in *libc6*libssl3*|*libssl3*libc6*) ;; *) fail "hotforge-agent: Depends not computed" ;; esac
  grep -q " ./usr/lib/hotforge/aarch64/libhotforge-agent.so$" <<<"$(dpkg-deb -c "$arm64")" || fail "arm64 agent missing"
fi
target_depends=$(dpkg-deb -f "$(deb hotforge-target)" Depends)
case $target_depends in *llvm*) fail "hotforge-target depends on LLVM: $target_depends" ;; esac

# Where each package puts what (README.md).
for f in usr/bin/hotforge usr/bin/hotforge-target usr/lib/hotforge/libhotforge-agent.so; do
  [ -f "$root/$f" ] || fail "$f is not installed"
done
target_files=$(dpkg-deb -c "$(deb hotforge-target)")
for f in usr/bin/hotforge-target usr/lib/hotforge/libhotforge-agent.so; do
  grep -q " ./$f\$" <<<"$target_files" || fail "$f is not in hotforge-target"
done
# (grep reads captured text: with pipefail, `grep -q` closing a pipe early would fail the pipeline)
if grep -qi llvm <<<"$(readelf -d "$root/usr/bin/hotforge-target")"; then fail "hotforge-target links LLVM"; fi
for f in "$root"/usr/bin/* "$root"/usr/lib/hotforge/*.so; do
  if grep -Eq 'RPATH|RUNPATH' <<<"$(readelf -d "$f")"; then fail "$f carries an RPATH"; fi
done

hf=$root/usr/bin/hotforge target=$root/usr/bin/hotforge-target
grep -q '^hotforge [0-9]' <<<"$("$hf" --version)" || fail "installed hotforge --version"
grep -q '^hotforge-target [0-9]' <<<"$("$target" --version)" || fail "installed hotforge-target --version"

s=$samples/elf-x64-gcc
"$hf" build "$s/core.base" "$s/core.fix1" -o "$work/core.hfpatch" --sequence 2 >/dev/null
"$hf" keygen -o "$work/release" >/dev/null
"$hf" pack "$work/core.hfpatch" -o "$work/fix1.hfu" --key "$work/release.pem" >/dev/null

export HOTFORGE_STATE_DIR=$work/state
coproc SERVE { exec "$s/core.base" serve; }
pid=$SERVE_PID
round() {  # the line scenario 1 fixes, from one round of the running sample
  local line found=
  echo r >&"${SERVE[1]}"
  while read -r line <&"${SERVE[0]}" && [ "$line" != hf-round-end ]; do
    case $line in "s1 table_get(16)"*) found=$line ;; esac
  done
  echo "$found"
}
before=$(round)
"$target" apply --pid "$pid" "$work/fix1.hfu" --pubkey "$work/release.pub.pem"
patched=$(round)
grep -q "table_get at" <<<"$("$target" status --pid "$pid")" || fail "status does not list table_get"
"$target" revert --pid "$pid"
after=$(round)
expected_base=$(grep "^s1 table_get(16)" "$(dirname "$0")/../samples/expected/core.base.txt" || true)
expected_fix=$(grep "^s1 table_get(16)" "$(dirname "$0")/../samples/expected/core.fix1.txt" || true)
echo "before: $before; applied: $patched; reverted: $after"
[ -n "$before" ] && [ "$before" = "$expected_base" ] || fail "baseline round: '$before', expected '$expected_base'"
[ "$patched" = "$expected_fix" ] && [ "$patched" != "$before" ] || fail "after apply: '$patched', expected '$expected_fix'"
[ "$after" = "$before" ] || fail "after revert: '$after', expected '$before'"
echo "ok"

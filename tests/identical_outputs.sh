#!/usr/bin/env bash
# Byte-identity check for refactors: runs two hotforge executables on every sample pair and
# compares what they write, byte for byte.
#
#   tests/identical_outputs.sh REF NEW SAMPLES [WORKDIR]
#
# REF and NEW are hotforge executables or build directories (DIR/cli/hotforge). SAMPLES is a
# samples directory (build/samples). For every target directory and every PROG.base/PROG.fixN
# pair it records, with each executable: `diff` (text and --json), `build --json` (the image, the
# records, stderr and the exit code, refusals included), then per target one `pack` of all its
# images with a fixed test key, and one `release` of all pairs (units, summary.json,
# summary.html, pages/, the text output; not times.json and the times line). Everything is written under
# WORKDIR/ref and WORKDIR/new (default: a temporary directory, removed unless KEEP=1), then
# compared file by file. Prints every file that differs (with a short diff for text) and exits 1
# if any does, 0 if all are identical. JOBS (default 2) pairs run at once.
set -euo pipefail

if [ $# -lt 3 ]; then
  echo "usage: $0 REF NEW SAMPLES [WORKDIR]" >&2
  exit 2
fi

resolve_exe() {
  if [ -d "$1" ]; then echo "$(cd "$1" && pwd)/cli/hotforge"; else echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; fi
}
REF=$(resolve_exe "$1")
NEW=$(resolve_exe "$2")
SAMPLES=$(cd "$3" && pwd)
for exe in "$REF" "$NEW"; do
  [ -x "$exe" ] || { echo "$0: not an executable: $exe" >&2; exit 2; }
done
if [ $# -ge 4 ]; then
  WORK=$4
  mkdir -p "$WORK"
  WORK=$(cd "$WORK" && pwd)
else
  WORK=$(mktemp -d)
  [ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
fi
JOBS=${JOBS:-2}
export SOURCE_DATE_EPOCH=0

# A fixed Ed25519 test key (seed 01 02 ... 20), so units are comparable across runs.
KEY=$WORK/test-key.pem
cat > "$KEY" <<'EOF'
-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g
-----END PRIVATE KEY-----
EOF
chmod 600 "$KEY"
TARGETS=$(python3 -c 'import json, sys; print(" ".join(t["name"] for t in json.load(open(sys.argv[1]))["targets"]))' "$SAMPLES/samples.json")

# Every pair as "TARGET BASE PATCHED", paths relative to SAMPLES.
list_pairs() {
  local dir target base name prog ext fix
  for target in $TARGETS; do
    dir=$SAMPLES/$target/
    for base in "$dir"*.base*; do
      [ -f "$base" ] || continue
      name=$(basename "$base")
      case "$name" in *.pdb|*.lib) continue ;; esac
      prog=${name%%.base*}
      ext=${name#"$prog".base}
      for fix in "$dir$prog".fix*"$ext"; do
        [ -f "$fix" ] || continue
        case "$fix" in *.pdb|*.lib) continue ;; esac
        echo "$target $target/$name $target/$(basename "$fix")"
      done
    done
  done
}

# One pair with one executable: EXE OUT TARGET BASE PATCHED.
run_pair() {
  local exe=$1 out=$2 target=$3 base=$4 patched=$5
  local stem
  stem=$out/$target/$(basename "$patched")
  mkdir -p "$out/$target"
  cd "$SAMPLES"
  set +e
  "$exe" diff "$base" "$patched" > "$stem.diff.txt" 2> "$stem.diff.err"
  echo $? > "$stem.diff.rc"
  "$exe" diff --json "$base" "$patched" > "$stem.diff.json" 2> "$stem.diff-json.err"
  echo $? > "$stem.diff-json.rc"
  "$exe" build "$base" "$patched" -o "$stem.image" --json > "$stem.build.json" 2> "$stem.build.err"
  echo $? > "$stem.build.rc"
  "$exe" build "$base" "$patched" -o "$stem.image-text" > "$stem.build.txt" 2> "$stem.build-text.err"
  echo $? > "$stem.build-text.rc"
  if [ -f "$stem.image-text" ]; then
    cmp -s "$stem.image" "$stem.image-text" || echo "build with and without --json differ" > "$stem.build-text.mismatch"
    rm -f "$stem.image-text"
  fi
  # Paths in messages name the output, which differs between the two sides only by WORKDIR.
  sed -i "s|$out|OUT|g" "$stem".*.err "$stem".*.txt "$stem".*.json
  return 0
}
export -f run_pair
export SAMPLES

produce() {
  local exe=$1 out=$2 target images
  rm -rf "$out"
  mkdir -p "$out"
  list_pairs | xargs -P "$JOBS" -L 1 bash -c 'run_pair "$0" "$1" "$2" "$3" "$4"' "$exe" "$out"
  for dir in "$out"/*/; do
    target=$(basename "$dir")
    images=$(cd "$dir" && ls -- *.image 2>/dev/null | sort || true)
    [ -n "$images" ] || continue
    # shellcheck disable=SC2086
    (cd "$dir"; set +e; "$exe" pack $images -o "../$target.hfu" --key "$KEY" --release identity-check --json \
        > "../$target.pack.json" 2> "../$target.pack.err"; echo $? > "../$target.pack.rc")
  done
  # One release of every pair, entries named TARGET/PATCHED.
  {
    echo '{"schema": "hotforge.release-manifest/1", "release": "identity", "baseline": "ref", "sequence": 1, "entries": ['
    list_pairs | awk -v root="$SAMPLES" 'NR > 1 { printf ",\n" }
      { printf "{\"name\": \"%s\", \"baseline\": \"%s/%s\", \"patched\": \"%s/%s\"}", $3, root, $2, root, $3 }'
    echo ']}'
  } > "$out/release-manifest.json"
  set +e
  "$exe" release "$out/release-manifest.json" -o "$out/release" --key "$KEY" --no-cache --progress none -j "$JOBS" \
      > "$out/release.txt" 2> "$out/release.err"
  echo $? > "$out/release.rc"
  set -e
  rm -f "$out/release/times.json"  # wall-clock times, the only part that may differ
  sed -i -e '/^times: /d' -e "s|$out|OUT|g" "$out/release.txt" "$out/release.err"
}

echo "reference: $REF"
echo "new:       $NEW"
echo "samples:   $SAMPLES ($(list_pairs | wc -l) pairs)"
produce "$REF" "$WORK/ref"
produce "$NEW" "$WORK/new"

files=$(cd "$WORK/ref" && find . -type f | wc -l)
if diff -rq "$WORK/ref" "$WORK/new" > "$WORK/differences.txt"; then
  echo "identical: $files files (diff text and JSON, build images, records and messages, exit codes, packed units, release)"
  exit 0
fi
echo "DIFFERENT: $(wc -l < "$WORK/differences.txt") of $files files:"
while read -r line; do
  echo "  $line"
  case "$line" in
    Files\ *\ and\ *\ differ)
      a=$(echo "$line" | sed -E 's/^Files (.*) and .* differ$/\1/')
      b=$(echo "$line" | sed -E 's/^Files .* and (.*) differ$/\1/')
      if file -b --mime "$a" | grep -q '^text/\|json'; then diff -u "$a" "$b" | sed -n '3,20p' | sed 's/^/      /'; fi
      ;;
  esac
done < "$WORK/differences.txt"
exit 1

#!/usr/bin/env bash
# run.sh BUILD_DIR SAMPLES_DIR SECONDS: fuzz the image reader, seeded with the built samples, then the
# delivery-unit reader; each target runs for SECONDS.
set -euo pipefail
build=$1 samples=$2 seconds=$3
corpus=$build/fuzz-corpus/read_image
mkdir -p "$corpus"
# (find || true): head closes the pipe after 200 names, and find's SIGPIPE must not end the script.
(find "$samples" -type f \( -name '*.dll' -o -name '*.exe' -o -perm -u+x \) -size -2M || true) | head -n 200 |
  while read -r f; do cp -n "$f" "$corpus/$(sha1sum "$f" | cut -c1-16)"; done
"$build/tests/fuzz/fuzz_read_image" "$corpus" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
  -max_len=2000000 -print_final_stats=1 -artifact_prefix="$build/fuzz-"

# The delivery-unit reader, seeded with valid units signed by the target's fixed test key.
unit_corpus=$build/fuzz-corpus/unit
mkdir -p "$unit_corpus"
HOTFORGE_FUZZ_UNIT_SEEDS="$unit_corpus" "$build/tests/fuzz/fuzz_unit" "$unit_corpus" -max_total_time="$seconds" \
  -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 -artifact_prefix="$build/fuzz-unit-"

#!/usr/bin/env bash
# run.sh BUILD_DIR SAMPLES_DIR SECONDS HOTFORGE: fuzz the image reader, seeded with the built samples,
# the delivery-unit reader, and the patch-image reader, seeded with images HOTFORGE builds from the
# samples; each target runs for SECONDS.
set -euo pipefail
build=$1 samples=$2 seconds=$3 hotforge=$4
corpus=$build/fuzz-corpus/read_image
mkdir -p "$corpus"
# The stripped images without unwind tables first: function discovery decodes all of their code.
# (find || true): head closes the pipe after 200 names, and find's SIGPIPE must not end the script.
( (find "$samples/nounwind" -path '*/stripped/*' -type f || true)
  find "$samples" -type f \( -name '*.dll' -o -name '*.exe' -o -perm -u+x \) -size -2M || true) | head -n 200 |
  while read -r f; do cp -n "$f" "$corpus/$(sha1sum "$f" | cut -c1-16)"; done
"$build/tests/fuzz/fuzz_read_image" "$corpus" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
  -max_len=2000000 -print_final_stats=1 -artifact_prefix="$build/fuzz-"

# The delivery-unit reader, seeded with valid units signed by the target's fixed test key.
unit_corpus=$build/fuzz-corpus/unit
mkdir -p "$unit_corpus"
HOTFORGE_FUZZ_UNIT_SEEDS="$unit_corpus" "$build/tests/fuzz/fuzz_unit" "$unit_corpus" -max_total_time="$seconds" \
  -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 -artifact_prefix="$build/fuzz-unit-"

# The patch-image reader, seeded with images of both containers and machines.
patch_corpus=$build/fuzz-corpus/patch_image
mkdir -p "$patch_corpus"
for pair in elf-x64-gcc/core.base:elf-x64-gcc/core.fix5 elf-a64-clang/exc.base:elf-a64-clang/exc.fix11 \
            pe-x64/core.base.dll:pe-x64/core.fix9.dll pe-a64/core.base.dll:pe-a64/core.fix3.dll; do
  "$hotforge" build "$samples/${pair%%:*}" "$samples/${pair##*:}" -o "$patch_corpus/$(echo "$pair" | tr '/:' '__')" >/dev/null
done
"$build/tests/fuzz/fuzz_patch_image" "$patch_corpus" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
  -max_len=65536 -print_final_stats=1 -artifact_prefix="$build/fuzz-patch-"

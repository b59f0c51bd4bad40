#!/usr/bin/env bash
# samples/build.sh OUTDIR
#
# Builds every sample program (baseline + one patched variant per scenario)
# for every target, then writes OUTDIR/samples.json.  See samples/README.md
# for the scenarios, the layout and the manifest.  Idempotent: it removes and
# rebuilds its own output directories (never OUTDIR/wineprefix).
#
# Internal mode (used for parallel jobs):  build.sh --job OUTDIR TARGET PROGRAM VARIANT
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC=$HERE/src
SELF=$HERE/build.sh

TARGETS=(elf-x64-gcc elf-x64-clang elf-a64-gcc elf-a64-clang pe-x64 pe-a64 mingw-x64)
PROGRAMS=(core initval exc live upd entry)

die() { echo "build.sh: error: $*" >&2; exit 1; }

# Variants of each program: the baseline plus fixN for each scenario it holds.
program_scenarios() {
    case $1 in
    core) echo "1 2 3 4 5 7 8 9 10 12 13 20" ;;
    initval) echo "6" ;;
    exc) echo "11" ;;
    live) echo "14" ;;
    upd) echo "30 31 32 33 50 51 52" ;;
    entry) echo "40 41 42" ;;
    *) die "unknown program $1" ;;
    esac
}

# Prints a reason and succeeds when PROGRAM cannot be built for TARGET.
skip_reason() { # target program
    case $1:$2 in
    pe-*:exc)
        echo "C++ exceptions on *-windows-msvc need the MSVC C++ runtime (__CxxFrameHandler4," \
             "_CxxThrowException, vcruntime); the freestanding PE targets have no CRT"
        return 0 ;;
    esac
    return 1
}

sources() { # program -> source files (PE DLLs use only the first one)
    case $1 in
    core) echo "core.c core_main.c" ;;
    initval) echo "initval.c initval_main.c" ;;
    exc) echo "exc.cpp exc_main.cpp" ;;
    live) echo "live.c live_main.c" ;;
    upd) echo "upd.c upd_main.c" ;;
    entry) echo "entry.c entry_main.c" ;;
    esac
}

is_cxx() { [ "$1" = exc ]; }

# ---------------------------------------------------------------- one job --
build_elf() { # out target program variant def
    local out=$1 t=$2 p=$3 v=$4 def=$5
    local cc cxx extra=()
    case $t in
    elf-x64-gcc) cc=gcc; cxx=g++ ;;
    elf-x64-clang) cc=clang-19; cxx=clang++-19 ;;
    elf-a64-gcc) cc=aarch64-linux-gnu-gcc; cxx=aarch64-linux-gnu-g++ ;;
    elf-a64-clang) cc=clang-19; cxx=clang++-19; extra=(--target=aarch64-linux-gnu -fuse-ld=lld) ;;
    esac
    local comp=$cc std=-std=gnu11
    if is_cxx "$p"; then comp=$cxx; std=-std=gnu++17; fi
    [ "$p" = live ] && extra+=(-pthread)
    local srcs=() f
    for f in $(sources "$p"); do srcs+=("$SRC/$f"); done

    local dir=$out/$t stem=$p.$v
    "$comp" "${extra[@]}" $std -O2 -g -fPIE -pie -Wall -Wextra ${def:+"$def"} -I"$SRC" \
        -Wl,--build-id=sha1 "${srcs[@]}" -o "$dir/$stem"

    # Separate debug file, stripped copy with .gnu_debuglink, build-id tree.
    llvm-objcopy-19 --only-keep-debug "$dir/$stem" "$dir/debug/$stem.debug"
    llvm-strip-19 --strip-all "$dir/$stem" -o "$dir/stripped/$stem"
    (cd "$dir/debug" && llvm-objcopy-19 --add-gnu-debuglink="$stem.debug" "../stripped/$stem")
    local id
    id=$(llvm-readelf-19 -n "$dir/$stem" | sed -n 's/.*Build ID: *\([0-9a-f]*\).*/\1/p')
    [ ${#id} -ge 16 ] || die "$dir/$stem has no build-id"
    mkdir -p "$dir/debug/.build-id/${id:0:2}"
    ln -sfn "../../$stem.debug" "$dir/debug/.build-id/${id:0:2}/${id:2}.debug"
}

pe_machine() { case $1 in pe-x64) echo x64 ;; pe-a64) echo arm64 ;; esac; }
pe_cflags() { # target
    local tgt
    case $1 in pe-x64) tgt=x86_64-pc-windows-msvc ;; pe-a64) tgt=aarch64-pc-windows-msvc ;; esac
    echo "--target=$tgt -O2 -ffreestanding -fno-builtin -fno-stack-protector -funwind-tables" \
         "-gcodeview -g -Wall -Wextra -DHF_PE_DLL"
}
# /Brepro: TimeDateStamp and PDB GUID are hashes of the content (deterministic);
# /release: fills OptionalHeader.CheckSum; /pdbaltpath: the image names its PDB
# by file name only, as shipped Windows binaries do.
pe_link() { # target pdb dll implib objs...
    local t=$1 pdb=$2 dll=$3 lib=$4; shift 4
    lld-link-19 /nologo /machine:"$(pe_machine "$t")" /dll /noentry /nodefaultlib \
        /debug /pdb:"$pdb" /pdbaltpath:%_PDB% /Brepro /release \
        /implib:"$lib" /out:"$dll" "$@"
}

build_pe() { # out target program variant def
    local out=$1 t=$2 p=$3 v=$4 def=$5
    local dir=$out/$t stem=$p.$v obj=$out/obj/$t/$p.$v
    mkdir -p "$obj"
    local src
    src=$(sources "$p" | cut -d' ' -f1)
    # shellcheck disable=SC2046
    clang-19 $(pe_cflags "$t") ${def:+"$def"} -I"$SRC" -c "$SRC/$src" -o "$obj/$p.obj"
    local objs=("$obj/$p.obj" "$out/obj/$t/loadcfg.obj")
    case $p in
    core) objs+=("$out/obj/$t/tls.obj" "$dir/hfplat.lib") ;;
    upd) objs+=("$dir/hfplat.lib") ;;   # called without dllimport: lld-link adds import thunks
    esac
    pe_link "$t" "$dir/$stem.pdb" "$dir/$stem.dll" "$obj/$stem.lib" "${objs[@]}"
    cp "$dir/$stem.dll" "$dir/stripped/$stem.dll"
}

build_pe_support() { # out target: hfplat.dll + shared objects
    local out=$1 t=$2 dir=$1/$2 obj=$1/obj/$2
    mkdir -p "$obj"
    cd "$SRC"
    # shellcheck disable=SC2046
    {
        clang-19 $(pe_cflags "$t") -c "$SRC/pe/loadcfg.c" -o "$obj/loadcfg.obj"
        clang-19 $(pe_cflags "$t") -c "$SRC/pe/tls.c" -o "$obj/tls.obj"
        clang-19 $(pe_cflags "$t") -c "$SRC/pe/hfplat.c" -o "$obj/hfplat.obj"
    }
    pe_link "$t" "$dir/hfplat.pdb" "$dir/hfplat.dll" "$dir/hfplat.lib" "$obj/hfplat.obj"
}

build_mingw() { # out target program variant def
    local out=$1 t=$2 p=$3 v=$4 def=$5
    local comp=x86_64-w64-mingw32-gcc std=-std=gnu11 extra=()
    if is_cxx "$p"; then
        comp=x86_64-w64-mingw32-g++; std=-std=gnu++17
        extra=(-static-libgcc -static-libstdc++)   # runs under wine without extra DLLs
    fi
    local srcs=() f
    for f in $(sources "$p"); do srcs+=("$SRC/$f"); done
    local dir=$out/$t stem=$p.$v
    # GNU ld stamps PE images with the current time unless SOURCE_DATE_EPOCH is
    # set; use a fixed, distinct stamp per program/variant so that rebuilds are
    # byte-identical and base and fixN never share a TimeDateStamp.
    local pidx n=0
    case $p in core) pidx=1 ;; initval) pidx=2 ;; exc) pidx=3 ;; live) pidx=4 ;; upd) pidx=5 ;; entry) pidx=6 ;; esac
    [ "$v" = base ] || n=${v#fix}
    # GNU strip re-stamps the image too, so it gets the same SOURCE_DATE_EPOCH
    # (the stripped copy keeps the TimeDateStamp; its CheckSum is recomputed).
    export SOURCE_DATE_EPOCH=$((1735689600 + pidx * 100 + n))
    "$comp" $std -O2 -g -Wall -Wextra ${def:+"$def"} -I"$SRC" "${extra[@]}" "${srcs[@]}" -o "$dir/$stem.exe"
    x86_64-w64-mingw32-strip --strip-all "$dir/$stem.exe" -o "$dir/stripped/$stem.exe"
}

# core once more per target without unwind tables, as release binaries and EFI applications
# often are: kept with its symbols (mingw: and DWARF; PE: its PDB in debug/), plus a stripped copy. Function
# discovery from code is checked on these against the symbols (tests/formats_discovery_test.cpp).
build_nounwind() { # out target
    local out=$1 t=$2 dir=$1/nounwind/$2
    mkdir -p "$dir/stripped"
    local flags=(-O2 -fno-asynchronous-unwind-tables -fno-unwind-tables -Wall -Wextra -I"$SRC")
    local cc=gcc extra=()
    case $t in
    elf-*)
        case $t in
        elf-x64-clang) cc=clang-19 ;;
        elf-a64-gcc) cc=aarch64-linux-gnu-gcc ;;
        elf-a64-clang) cc=clang-19; extra=(--target=aarch64-linux-gnu -fuse-ld=lld) ;;
        esac
        "$cc" "${extra[@]}" -std=gnu11 "${flags[@]}" -fPIE -pie "$SRC/core.c" "$SRC/core_main.c" -o "$dir/core"
        llvm-strip-19 --strip-all "$dir/core" -o "$dir/stripped/core" ;;
    mingw-*)
        export SOURCE_DATE_EPOCH=1735689600
        x86_64-w64-mingw32-gcc -std=gnu11 -g "${flags[@]}" "$SRC/core.c" "$SRC/core_main.c" -o "$dir/core.exe"
        x86_64-w64-mingw32-strip --strip-all "$dir/core.exe" -o "$dir/stripped/core.exe" ;;
    pe-*)
        # EFI-style: no .pdata, no exports, no imports; the PDB kept apart in debug/.
        local obj=$out/obj/nounwind/$t f
        mkdir -p "$obj" "$dir/debug"
        for f in core pe/efi; do
            # shellcheck disable=SC2046
            clang-19 $(pe_cflags "$t") -fno-asynchronous-unwind-tables -fno-unwind-tables -DHF_EFI -I"$SRC" \
                -c "$SRC/$f.c" -o "$obj/${f#pe/}.obj"
        done
        lld-link-19 /nologo /machine:"$(pe_machine "$t")" /subsystem:efi_application /entry:efi_main \
            /nodefaultlib /debug /pdb:"$dir/debug/core.pdb" /pdbaltpath:%_PDB% /Brepro \
            /out:"$dir/stripped/core.efi" "$obj/core.obj" "$obj/efi.obj" "$out/obj/$t/tls.obj" ;;
    esac
}

run_job() { # out target program variant
    local out=$1 t=$2 p=$3 v=$4 def=""
    cd "$SRC"   # the compile directory ends up in the debug info: keep it fixed
    [ "$v" = base ] || def="-DHF_FIX=${v#fix}"
    case $t in
    elf-*) build_elf "$out" "$t" "$p" "$v" "$def" ;;
    pe-*) build_pe "$out" "$t" "$p" "$v" "$def" ;;
    mingw-*) build_mingw "$out" "$t" "$p" "$v" "$def" ;;
    *) die "unknown target $t" ;;
    esac
}

if [ "${1:-}" = --job ]; then
    shift
    [ $# -eq 4 ] || die "--job needs OUTDIR TARGET PROGRAM VARIANT"
    run_job "$@"
    exit 0
fi
if [ "${1:-}" = --nounwind ]; then
    build_nounwind "$2" "$3"
    exit 0
fi

# ------------------------------------------------------------------ main --
[ $# -eq 1 ] || { echo "usage: samples/build.sh OUTDIR" >&2; exit 2; }
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
start=$(date +%s%N)

need=(gcc g++ clang-19 clang++-19 aarch64-linux-gnu-gcc aarch64-linux-gnu-g++ lld-link-19
      ld.lld-19 llvm-objcopy-19 llvm-strip-19 llvm-readelf-19 x86_64-w64-mingw32-gcc
      x86_64-w64-mingw32-g++ x86_64-w64-mingw32-strip python3)
for tool in "${need[@]}"; do
    command -v "$tool" >/dev/null || die "missing tool: $tool (see samples/README.md, Requirements)"
done

# Clean only what this script owns.
for t in "${TARGETS[@]}"; do rm -rf "${OUT:?}/$t"; done
rm -rf "$OUT/nounwind" "$OUT/obj" "$OUT/expected" "$OUT/samples.json" "$OUT/run-wine.sh"

jobs_file=$OUT/obj/jobs.txt
skipped_file=$OUT/obj/skipped.txt
mkdir -p "$OUT/obj"
: >"$jobs_file"
: >"$skipped_file"
for t in "${TARGETS[@]}"; do
    mkdir -p "$OUT/$t/stripped"
    case $t in elf-*) mkdir -p "$OUT/$t/debug/.build-id" ;; esac
    for p in "${PROGRAMS[@]}"; do
        if reason=$(skip_reason "$t" "$p"); then
            printf '%s\t%s\t%s\n' "$t" "$p" "$reason" >>"$skipped_file"
            continue
        fi
        echo "$t $p base" >>"$jobs_file"
        for n in $(program_scenarios "$p"); do echo "$t $p fix$n" >>"$jobs_file"; done
    done
done

# PE support objects and hfplat.dll first (core DLLs link against hfplat.lib).
build_pe_support "$OUT" pe-x64 &
pid1=$!
build_pe_support "$OUT" pe-a64 &
pid2=$!
wait "$pid1" || die "pe-x64 support build failed"
wait "$pid2" || die "pe-a64 support build failed"

# Everything else in parallel, one job per binary.
ncpu=$(nproc 2>/dev/null || echo 2)
if ! xargs -P "$ncpu" -L 1 "$SELF" --job "$OUT" <"$jobs_file"; then
    die "some binaries failed to build (see the messages above)"
fi
if ! printf '%s\n' "${TARGETS[@]}" | xargs -P "$ncpu" -n 1 "$SELF" --nounwind "$OUT"; then
    die "the nounwind variant failed to build (see the messages above)"
fi

# Expected stdout of the deterministic programs, and the wine wrapper.
mkdir -p "$OUT/expected"
cp "$HERE"/expected/*.txt "$OUT/expected/"
cat >"$OUT/run-wine.sh" <<'EOF'
#!/bin/sh
# Runs a mingw-x64 sample under wine64.  The prefix defaults to
# <this dir>/wineprefix (created on first use, ~11 s).
d=$(cd "$(dirname "$0")" && pwd)
WINEPREFIX=${WINEPREFIX:-$d/wineprefix}
WINEDEBUG=${WINEDEBUG:--all}
export WINEPREFIX WINEDEBUG
exec /usr/lib/wine/wine64 "$@"
EOF
chmod +x "$OUT/run-wine.sh"

# Manifest.
python3 "$HERE/manifest.py" "$OUT" "$HERE/scenarios.json" "$jobs_file" "$skipped_file"

end=$(date +%s%N)
summary=""
total=0
for t in "${TARGETS[@]}"; do
    n=$(grep -c "^$t " "$jobs_file" || true)
    total=$((total + n))
    summary+=" $t=$n"
done
ms=$(((end - start) / 1000000))
printf 'samples: %d binaries (+ hfplat.dll per pe target) in %s:%s; %d.%ds\n' \
    "$total" "$OUT" "$summary" $((ms / 1000)) $((ms % 1000 / 100))

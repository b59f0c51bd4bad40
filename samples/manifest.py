#!/usr/bin/env python3
"""Writes OUTDIR/samples.json for samples/build.sh (standard library only).

usage: manifest.py OUTDIR SCENARIOS_JSON JOBS_TXT SKIPPED_TXT

JOBS_TXT has one "target program variant" line per binary that build.sh
built; SKIPPED_TXT has "target<TAB>program<TAB>reason" lines.  Every path in
the manifest is relative to OUTDIR, and every "run" argv is meant to be
executed with OUTDIR as the working directory.
"""
import json
import os
import sys

TARGETS = {
    "elf-x64-gcc": dict(format="elf", arch="x86_64", compiler="gcc", runnable=True, run_prefix=[]),
    "elf-x64-clang": dict(format="elf", arch="x86_64", compiler="clang-19", runnable=True, run_prefix=[]),
    "elf-a64-gcc": dict(format="elf", arch="aarch64", compiler="aarch64-linux-gnu-gcc", runnable=True,
                        run_prefix=["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"]),
    "elf-a64-clang": dict(format="elf", arch="aarch64", compiler="clang-19 --target=aarch64-linux-gnu",
                          runnable=True, run_prefix=["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"]),
    "pe-x64": dict(format="pe", arch="x86_64", compiler="clang-19 --target=x86_64-pc-windows-msvc + lld-link-19",
                   runnable=False, run_prefix=None),
    "pe-a64": dict(format="pe", arch="aarch64", compiler="clang-19 --target=aarch64-pc-windows-msvc + lld-link-19",
                   runnable=False, run_prefix=None),
    "mingw-x64": dict(format="pe", arch="x86_64", compiler="x86_64-w64-mingw32-gcc", runnable=True,
                      run_prefix=["./run-wine.sh"]),
}

# Default arguments: quick, bounded runs.  live: 5 iterations, 1 ms apart, 2 threads.
RUN_ARGS = {"core": [], "initval": [], "exc": [], "live": ["5", "1", "2"], "upd": [], "entry": []}


def build_ids(out, target):
    """Maps '<program>.<variant>' to its build-id, from debug/.build-id links."""
    ids = {}
    root = os.path.join(out, target, "debug", ".build-id")
    for sub in sorted(os.listdir(root)):
        for name in sorted(os.listdir(os.path.join(root, sub))):
            link = os.readlink(os.path.join(root, sub, name))
            stem = os.path.basename(link)[: -len(".debug")]
            ids[stem] = sub + name[: -len(".debug")]
    return ids


def main():
    out, scenarios_path, jobs_path, skipped_path = sys.argv[1:5]
    with open(scenarios_path) as f:
        scenarios = json.load(f)

    jobs = []
    with open(jobs_path) as f:
        for line in f:
            if line.strip():
                jobs.append(line.split())

    samples = []
    ids_cache = {}
    for target, program, variant in jobs:
        info = TARGETS[target]
        stem = f"{program}.{variant}"
        scenario = None if variant == "base" else int(variant[3:])
        if info["format"] == "elf":
            path = f"{target}/{stem}"
            stripped = f"{target}/stripped/{stem}"
            debug = f"{target}/debug/{stem}.debug"
            pdb = None
            if target not in ids_cache:
                ids_cache[target] = build_ids(out, target)
            build_id = ids_cache[target][stem]
        elif target.startswith("pe-"):
            path = f"{target}/{stem}.dll"
            stripped = f"{target}/stripped/{stem}.dll"
            debug, pdb, build_id = None, f"{target}/{stem}.pdb", None
        else:  # mingw: DWARF stays inside the unstripped .exe
            path = f"{target}/{stem}.exe"
            stripped = f"{target}/stripped/{stem}.exe"
            debug, pdb, build_id = None, None, None
        for p in (path, stripped, debug, pdb):
            if p is not None and not os.path.exists(os.path.join(out, p)):
                sys.exit(f"manifest.py: missing {p}")
        expected = f"expected/{stem}.txt"
        if not info["runnable"] or not os.path.exists(os.path.join(out, expected)):
            expected = None
        run = None
        if info["runnable"]:
            run = info["run_prefix"] + [path] + RUN_ARGS[program]
        samples.append(dict(
            target=target, program=program, variant=variant, scenario=scenario,
            path=path, stripped_path=stripped, debug_path=debug, pdb_path=pdb,
            build_id=build_id, runnable=info["runnable"], run=run, expected_stdout=expected,
        ))

    # Skipped (target, program) pairs, grouped by program and reason.
    groups = {}
    with open(skipped_path) as f:
        for line in f:
            if not line.strip():
                continue
            target, program, reason = line.rstrip("\n").split("\t", 2)
            groups.setdefault((program, reason), []).append(target)
    skipped = []
    for (program, reason), targets in sorted(groups.items()):
        progs = [s for s in scenarios["scenarios"] if s["program"] == program]
        skipped.append(dict(
            program=program,
            scenarios=[s["scenario"] for s in progs],
            variants=["base"] + [f"fix{s['scenario']}" for s in progs],
            targets=targets,
            reason=reason,
        ))

    support = []
    for target in ("pe-x64", "pe-a64"):
        support.append(dict(
            target=target, name="hfplat", path=f"{target}/hfplat.dll", pdb_path=f"{target}/hfplat.pdb",
            implib_path=f"{target}/hfplat.lib",
            purpose="exports hfplat_strtoi; core.*.dll imports it through the IAT (scenario 10)",
        ))

    manifest = dict(
        schema=1,
        generated_by="samples/build.sh",
        note="Paths are relative to this file's directory; run each 'run' argv with that directory "
             "as the working directory. Variant fixN differs from base by scenario N only.",
        targets=[dict(name=k, **{kk: vv for kk, vv in v.items()}) for k, v in TARGETS.items()],
        scenarios=scenarios["scenarios"],
        samples=samples,
        skipped=skipped,
        support=support,
    )
    tmp = os.path.join(out, "samples.json.tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    os.replace(tmp, os.path.join(out, "samples.json"))


if __name__ == "__main__":
    main()

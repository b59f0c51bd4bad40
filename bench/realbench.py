#!/usr/bin/env python3
"""realbench.py: hotforge on real Debian security updates (bench/real-updates.list).

For every pair of the list and every architecture it downloads both packages with
`apt-get download` into a cache (one folder per package and version), extracts them, finds the
shared libraries whose bytes differ, and runs `hotforge diff --json` and `hotforge build` on each,
next to `zstd --patch-from`, `xdelta3` and `bsdiff`. It prints one table row per changed library:
the diff summary, the needs-restart reasons by rule id, the build result, and the times and sizes.
With --speed N it prints the speed table instead: hotforge diff and the delta tools, best of N
runs each, peak memory, and the ratios the speed budget is set in.

  realbench.py --hotforge build/cli/hotforge [--cache DIR] [--work DIR] [--arch amd64,arm64]
               [--only PKG,...] [--json FILE] [--no-delta] [--speed N]

Everything hotforge wrote stays in WORK/out/PKG/ARCH/LIB.{diff.json,build.txt} for reading the
reasons. Exit status: 1 when a download or extraction fails or hotforge crashes (a refusal is a
result, not a failure).
"""
import argparse
import collections
import json
import os
import pathlib
import re
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent


def read_list(path):
    pairs = []
    for line in pathlib.Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].split()
        if line:
            if len(line) != 3:
                sys.exit(f"{path}: expected PACKAGE BASE PATCHED, got {' '.join(line)}")
            pairs.append(tuple(line))
    return pairs


def fetch(cache, package, version, arch):
    """The .deb of PACKAGE=VERSION for ARCH, downloaded into CACHE/PACKAGE/VERSION once."""
    folder = cache / package / version
    name = f"{package}_{version.replace(':', '%3a')}_{arch}.deb"
    deb = folder / name
    if deb.exists():
        return deb
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["apt-get", "download", "-q", f"{package}:{arch}={version}"], cwd=folder,
                            capture_output=True, text=True)
    if result.returncode != 0 or not deb.exists():
        raise RuntimeError(f"apt-get download {package}:{arch}={version} failed: "
                           f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}")
    return deb


def extract(deb, into):
    stamp = into / ".extracted"
    if not stamp.exists():
        into.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True)
        stamp.write_text(deb.name)
    return into


def shared_libraries(root):
    """Relative path -> file for every shared library under ROOT: a regular ELF file of type
    ET_DYN named *.so or *.so.N... (PIE executables are ET_DYN too: left out)."""
    libs = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file() or not re.search(r"\.so(\.[0-9.]+)?$", path.name):
            continue
        with open(path, "rb") as f:
            header = f.read(18)
        if header[:4] == b"\x7fELF" and header[16] == 3:
            libs[str(path.relative_to(root))] = path
    return libs


def with_suffix(path, suffix):  # libfoo.so.1.2 + .zst: libfoo.so.1.2.zst (Path.with_suffix would drop .2)
    return path.parent / (path.name + suffix)


def timed(command, **kwargs):
    start = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    return result, time.monotonic() - start


def measured(command, repeat):
    """Best wall time of REPEAT runs of COMMAND (output discarded), that run's peak RSS in MiB, the
    exit status, and the best user+sys CPU time of the runs (on a shared machine the CPU time moves
    less with the load than the wall time). The peak and the CPU time come from wait4 on the command
    itself, not from the children total."""
    best, cpu = None, None
    for _ in range(repeat):
        start = time.monotonic()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - start
        cpu = min(cpu or float("inf"), usage.ru_utime + usage.ru_stime)
        if best is None or seconds < best[0]:
            best = (seconds, usage.ru_maxrss / 1024, process.returncode)
    return (*best, cpu)


def run_diff(hotforge, base, patched, out):
    result, seconds = timed([hotforge, "diff", "--json", str(base), str(patched)])
    with_suffix(out, ".diff.json").write_text(result.stdout)
    row = {"diff_seconds": round(seconds, 3), "diff_exit": result.returncode}
    if result.returncode not in (0, 3):
        row["diff_error"] = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
        return row
    diff = json.loads(result.stdout)
    row.update({key: diff["summary"][key] for key in ("matched", "changed", "added", "removed")})
    row["verdict"] = diff["verdict"]
    row["restarts"] = dict(sorted(collections.Counter(
        change["rule"] for change in diff["changes"] if change["verdict"] == "needs-restart").items()))
    return row


def run_build(hotforge, base, patched, out, restarts):
    image = with_suffix(out, ".hfpatch")
    image.unlink(missing_ok=True)
    result, seconds = timed([hotforge, "build", str(base), str(patched), "-o", str(image)])
    with_suffix(out, ".build.txt").write_text(result.stdout + result.stderr)
    row = {"build_seconds": round(seconds, 3), "build_exit": result.returncode}
    if result.returncode == 0:
        row["build"] = f"ok {image.stat().st_size}B"
    elif result.returncode == 3 and restarts:
        row["build"] = "restart"
    elif result.returncode == 3:  # refused by the emitter: its reason, shortened
        reason = result.stderr.strip().removeprefix("hotforge: ").removeprefix("cannot build a safe patch: ")
        row["build"] = "refused: " + (reason if len(reason) <= 90 else reason[:87] + "...")
    else:
        lines = result.stderr.strip().splitlines()
        row["build"] = "error: " + (lines[-1] if lines else f"exit {result.returncode}")
    return row


DELTA_TOOLS = ("zstd", "xdelta3", "bsdiff")


def run_deltas(base, patched, out, repeat):
    row = {}
    for tool in DELTA_TOOLS:
        output = with_suffix(out, "." + tool)
        command = {"zstd": ["zstd", "-q", "-f", f"--patch-from={base}", str(patched), "-o", str(output)],
                   "xdelta3": ["xdelta3", "-e", "-f", "-s", str(base), str(patched), str(output)],
                   "bsdiff": ["bsdiff", str(base), str(patched), str(output)]}[tool]
        seconds, peak, status, cpu = measured(command, repeat)
        row[tool] = {"seconds": round(seconds, 4), "cpu_seconds": round(cpu, 4), "peak_mib": round(peak, 1),
                     "bytes": output.stat().st_size if status == 0 else None}
    return row


def run_speed(hotforge, base, patched, repeat):
    """hotforge diff timed as the delta tools are, with the issue's budget: at most 3x zstd's time,
    at most a tenth of bsdiff's, peak memory at most twice the inputs plus 100 MiB."""
    seconds, peak, status, cpu = measured([hotforge, "diff", "--json", str(base), str(patched)], repeat)
    inputs = (base.stat().st_size + patched.stat().st_size) / 1048576
    return {"diff_seconds": round(seconds, 4), "diff_cpu_seconds": round(cpu, 4), "diff_peak_mib": round(peak, 1),
            "diff_exit": status,
            "memory_budget_mib": round(2 * inputs + 100, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hotforge", required=True)
    parser.add_argument("--list", default=str(HERE / "real-updates.list"))
    parser.add_argument("--cache", default=os.environ.get("HOTFORGE_DEBCACHE", "/work/debcache"))
    parser.add_argument("--work", default=None, help="extraction and output folder (default: next to --hotforge's build)")
    parser.add_argument("--arch", default="amd64,arm64")
    parser.add_argument("--only", default="", help="comma-separated packages to run (default: all)")
    parser.add_argument("--json", help="also write every row as JSON to this file")
    parser.add_argument("--no-delta", action="store_true", help="skip zstd --patch-from, xdelta3 and bsdiff")
    parser.add_argument("--speed", type=int, metavar="N", default=0,
                        help="speed table only: hotforge diff and the delta tools, best of N runs each, "
                             "with time ratios and peak memory (no build)")
    args = parser.parse_args()

    hotforge = str(pathlib.Path(args.hotforge).resolve())
    cache = pathlib.Path(args.cache)
    work = pathlib.Path(args.work) if args.work else pathlib.Path(hotforge).parent.parent / "realbench"
    only = set(filter(None, args.only.split(",")))
    rows, failed = [], False
    for package, base_version, patched_version in read_list(args.list):
        if only and package not in only:
            continue
        for arch in args.arch.split(","):
            try:
                roots = [extract(fetch(cache, package, version, arch), work / "extract" / package / version / arch)
                         for version in (base_version, patched_version)]
            except (RuntimeError, subprocess.CalledProcessError) as error:
                print(f"realbench: {error}", file=sys.stderr)
                failed = True
                continue
            base_libs, patched_libs = (shared_libraries(root) for root in roots)
            for relative in sorted(base_libs.keys() & patched_libs.keys()):
                base, patched = base_libs[relative], patched_libs[relative]
                if base.read_bytes() == patched.read_bytes():
                    continue
                out = work / "out" / package / arch / pathlib.Path(relative).name
                out.parent.mkdir(parents=True, exist_ok=True)
                row = {"package": package, "arch": arch, "library": pathlib.Path(relative).name,
                       "base": base_version, "patched": patched_version,
                       "bytes": patched.stat().st_size}
                if args.speed:
                    row.update(run_speed(hotforge, base, patched, args.speed))
                    row.update(run_deltas(base, patched, out, args.speed))
                    failed |= row["diff_exit"] not in (0, 3)
                    rows.append(row)
                    print_speed_row(row, header=len(rows) == 1)
                    continue
                row.update(run_diff(hotforge, base, patched, out))
                if row.get("verdict") == "no-change":  # only the build id or padding differs
                    row.update(build="no change", build_seconds=0.0)
                else:
                    row.update(run_build(hotforge, base, patched, out, row.get("restarts")))
                if not args.no_delta:
                    row.update(run_deltas(base, patched, out, 1))
                failed |= "diff_error" in row or row["build"].startswith("error")
                rows.append(row)
                print_row(row, header=len(rows) == 1)
    if args.speed:
        print_speed_summary(rows)
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
        return 1 if failed else 0
    hotpatched = sum(row["build"].startswith("ok") for row in rows)
    print(f"\n{len(rows)} changed libraries: {hotpatched} hotpatched, "
          f"{sum(row.get('verdict') == 'needs-restart' for row in rows)} need a restart (diff), "
          f"{sum(row['build'].startswith('refused') for row in rows)} refused by build, "
          f"{sum(row['build'] == 'no change' for row in rows)} without a change")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
    return 1 if failed else 0


COLUMNS = ("package", "arch", "library", "m/c/a/r", "needs-restart reasons", "build", "diff s", "build s",
           "zstd --patch-from", "xdelta3", "bsdiff")


def delta_cell(row, tool):
    if tool not in row:
        return "-"
    result = row[tool]
    return f"{result['seconds']:.2f}s {result['bytes']}B" if result["bytes"] is not None else "failed"


def print_row(row, header):
    if header:
        print("| " + " | ".join(COLUMNS) + " |")
        print("|" + "---|" * len(COLUMNS))
    counts = "/".join(str(row.get(key, "-")) for key in ("matched", "changed", "added", "removed"))
    reasons = row.get("diff_error") or " ".join(f"{rule}x{n}" for rule, n in row.get("restarts", {}).items()) or "-"
    cells = (row["package"], row["arch"], row["library"], counts, reasons, row["build"],
             f"{row['diff_seconds']:.2f}", f"{row['build_seconds']:.2f}", *(delta_cell(row, t) for t in DELTA_TOOLS))
    print("| " + " | ".join(cells) + " |", flush=True)


SPEED_COLUMNS = ("library", "arch", "MiB", "hotforge diff", "diff CPU", "peak MiB (budget)", "zstd --patch-from", "xdelta3",
                 "bsdiff", "diff / zstd", "bsdiff / diff")


def speed_ratios(row):
    return row["diff_seconds"] / max(row["zstd"]["seconds"], 1e-3), row["bsdiff"]["seconds"] / max(row["diff_seconds"], 1e-3)


def print_speed_row(row, header):
    if header:
        print("| " + " | ".join(SPEED_COLUMNS) + " |")
        print("|" + "---|" * len(SPEED_COLUMNS))
    over_zstd, under_bsdiff = speed_ratios(row)
    cells = (row["library"], row["arch"], f"{row['bytes'] / 1048576:.2f}", f"{row['diff_seconds']:.3f}s",
             f"{row['diff_cpu_seconds']:.3f}s", f"{row['diff_peak_mib']:.0f} ({row['memory_budget_mib']:.0f})",
             *(f"{row[t]['seconds']:.3f}s {row[t]['peak_mib']:.0f}MiB" for t in DELTA_TOOLS),
             f"{over_zstd:.1f}x", f"{under_bsdiff:.1f}x")
    print("| " + " | ".join(cells) + " |", flush=True)


def print_speed_summary(rows):
    within = [row for row in rows if speed_ratios(row)[0] <= 3 and speed_ratios(row)[1] >= 10 and
              row["diff_peak_mib"] <= row["memory_budget_mib"]]
    total = {tool: sum(row[tool]["seconds"] for row in rows) for tool in DELTA_TOOLS}
    diff_total = sum(row["diff_seconds"] for row in rows)
    diff_cpu = sum(row["diff_cpu_seconds"] for row in rows)
    print(f"\n{len(rows)} changed libraries; {len(within)} within the budget (<= 3x zstd, <= 1/10 bsdiff, memory); "
          f"totals: hotforge diff {diff_total:.2f}s ({diff_cpu:.2f}s CPU), " +
          ", ".join(f"{t} {total[t]:.2f}s" for t in DELTA_TOOLS) +
          "; load average at the end: " + " ".join(f"{load:.2f}" for load in os.getloadavg()))


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Checks what samples/build.sh produced (standard library + the LLVM 19 tools).

usage: samples/verify.py OUTDIR [--no-run] [--jobs N]

1. Runs every runnable sample (and its stripped copy) from OUTDIR, compares
   stdout with expected/<program>.<variant>.txt, checks that every fixN prints
   something different from base (except fix13, which must print the same),
   and checks the `live` output format and values.
2. Static checks per target, with the LLVM tools (commands are printed with -v):
   s2 clamp_level has no symbol; s3 normalize_char only in fix3; s5 g_rejected
   only in fix5; s7 mask_flags shorter than a long jump; s9 op_apply uses an
   indirect jump through a table; s10 parse_num calls through the PLT / IAT;
   s12 tls_accumulate reaches TLS; s13 mix_hash moves but keeps its bytes;
   ELF: PIE, build-id, stripped copy with .gnu_debuglink, build-id tree;
   PE: load config (HotPatchTableOffset 0), PDB, TLS directory, hfplat import.
Exit status 0 when every check passes, 1 otherwise.
"""
import concurrent.futures
import json
import os
import re
import subprocess
import sys

VERBOSE = "-v" in sys.argv
failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL " + msg)


def ok(msg):
    print("ok   " + msg)


def sh(args, cwd=None, check=True):
    if VERBOSE:
        print("  $ " + " ".join(args))
    r = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout


# ------------------------------------------------------------------ runs --

def live_value(i, fixed):
    acc = 0
    for k in range((i & 7) + 1):
        acc += k * 3 + i
    return acc + (1000 if fixed else 0)


def check_live(out, argv, fixed):
    iters, threads = int(argv[-3]), int(argv[-1])
    lines = out.splitlines()
    if not lines or not re.fullmatch(rf"live start threads={threads} iterations={iters} sleep_ms=\d+", lines[0]):
        return "bad start line"
    if lines[-1] != f"live done calls={threads * iters}":
        return "bad done line"
    seen = {t: 0 for t in range(threads)}
    for ln in lines[1:-1]:
        m = re.fullmatch(r"live t=(\d+) i=(\d+) live_score\((\d+)\)=(-?\d+)", ln)
        if not m:
            return f"bad line {ln!r}"
        t, i, arg, v = map(int, m.groups())
        if i != seen.get(t) or arg != i or v != live_value(i, fixed):
            return f"unexpected line {ln!r}"
        seen[t] += 1
    if any(n != iters for n in seen.values()):
        return "missing lines"
    return None


def run_one(out, s, stripped):
    argv = list(s["run"])
    if stripped:
        argv[argv.index(s["path"])] = s["stripped_path"]
    r = subprocess.run(argv, cwd=out, capture_output=True, text=True, timeout=300)
    return s, stripped, argv, r


def run_all(out, manifest, jobs):
    samples = [s for s in manifest["samples"] if s["runnable"]]
    if any(s["target"] == "mingw-x64" for s in samples):
        # Create the wine prefix once, before parallel runs (first start ~11 s).
        first = next(s for s in samples if s["target"] == "mingw-x64")
        run_one(out, first, False)
    work = [(s, st) for s in samples for st in (False, True)]
    outputs = {}
    with concurrent.futures.ThreadPoolExecutor(jobs) as ex:
        for s, stripped, argv, r in ex.map(lambda w: run_one(out, *w), work):
            name = " ".join(argv)
            if r.returncode != 0:
                fail(f"run {name}: exit {r.returncode}: {r.stderr.strip()[:200]}")
                continue
            if s["program"] == "live":
                err = check_live(r.stdout, argv, s["variant"] != "base")
                if err:
                    fail(f"run {name}: {err}")
                    continue
            elif s["expected_stdout"]:
                with open(os.path.join(out, s["expected_stdout"])) as f:
                    if r.stdout != f.read():
                        fail(f"run {name}: stdout differs from {s['expected_stdout']}")
                        continue
            outputs[(s["target"], s["program"], s["variant"], stripped)] = r.stdout
    n = len(outputs)
    print(f"ok   ran {n} of {len(work)} runnable binaries (unstripped + stripped); outputs as expected")

    # fixN vs base, per target.
    for (t, p, v, st), text in sorted(outputs.items()):
        if v == "base" or st:
            continue
        base = outputs.get((t, p, "base", False))
        if base is None:
            continue
        same = text == base
        if v == "fix13" and not same:
            fail(f"{t} {p}.fix13 output differs from base (should be identical)")
        elif v != "fix13" and same:
            fail(f"{t} {p}.{v} output is identical to base")


def check_expected_files(out, manifest):
    base = {}
    for s in manifest["samples"]:
        if s["expected_stdout"] and s["variant"] == "base":
            with open(os.path.join(out, s["expected_stdout"])) as f:
                base[s["program"]] = f.read()
    seen = set()
    for s in manifest["samples"]:
        e = s["expected_stdout"]
        if not e or s["variant"] == "base" or e in seen:
            continue
        seen.add(e)
        with open(os.path.join(out, e)) as f:
            same = f.read() == base[s["program"]]
        if same != (s["variant"] == "fix13"):
            fail(f"{e}: wrong relation to base (identical={same})")
    ok(f"expected outputs: every fixN differs from base, fix13 is identical ({len(seen)} files)")


# ---------------------------------------------------------------- static --

def disasm(path, sym):
    """Instructions (address, text) of one symbol; llvm-objdump keeps going into padding."""
    text = sh(["llvm-objdump-19", "-d", "--no-show-raw-insn", f"--disassemble-symbols={sym}", path])
    insns, inside = [], False
    for ln in text.splitlines():
        if re.match(rf"^[0-9a-f]+ <{re.escape(sym)}>:$", ln):
            inside = True
            continue
        if inside:
            m = re.match(r"^\s*([0-9a-f]+):\s+(.*)$", ln)
            if not m:
                if insns:
                    break
                continue
            insns.append((int(m.group(1), 16), m.group(2).strip()))
    return insns


def symbols(path):
    """name -> (address, size or None) from the symbol table (ELF, mingw COFF)."""
    res = {}
    for ln in sh(["llvm-nm-19", "-S", "--defined-only", path]).splitlines():
        f = ln.split()
        if len(f) == 4:
            res[f[3]] = (int(f[0], 16), int(f[1], 16))
        elif len(f) == 3:
            res[f[2]] = (int(f[0], 16), None)
    return res


def pdb_procs(pdb):
    """name -> (section:offset string, code size) for S_GPROC32/S_LPROC32 records."""
    res = {}
    text = sh(["llvm-pdbutil-19", "dump", "--symbols", pdb])
    for m in re.finditer(r"S_[GL]PROC32 \[size = \d+\] `([^`]+)`\s*\n\s*parent = \d+, end = \d+, "
                         r"addr = ([0-9a-f]+):([0-9a-f]+), code size = (\d+)", text):
        res[m.group(1)] = (int(m.group(2), 16), int(m.group(3)), int(m.group(4)))
    return res


def dwarf_size(path, sym):
    text = sh(["llvm-dwarfdump-19", f"--name={sym}", path])
    m = re.search(r"DW_AT_low_pc\s+\((0x[0-9a-f]+)\)\s*\n\s*DW_AT_high_pc\s+\((0x[0-9a-f]+)\)", text)
    return int(m.group(2), 16) - int(m.group(1), 16) if m else None


class Image:
    """One built binary and how to ask it for function names, addresses and sizes."""

    def __init__(self, out, sample):
        self.s = sample
        self.path = os.path.join(out, sample["path"])
        self.kind = "elf" if sample["target"].startswith("elf") else \
            "pe" if sample["target"].startswith("pe-") else "mingw"
        self._syms = None
        self._procs = None

    def procs(self):
        if self.kind == "pe":
            if self._procs is None:
                self._procs = pdb_procs(self.path[:-4] + ".pdb")
            return self._procs
        if self._syms is None:
            self._syms = symbols(self.path)
        return self._syms

    def has(self, name):
        return name in self.procs()

    def size(self, name):
        if self.kind == "elf":
            return self.procs()[name][1]
        if self.kind == "pe":
            return self.procs()[name][2]
        return dwarf_size(self.path, name)

    def addr(self, name):
        insns = disasm(self.path, name)
        return insns[0][0] if insns else None

    def body(self, name):
        """Instruction texts of the first size() bytes, without addresses."""
        size = self.size(name)
        insns = disasm(self.path, name)
        start = insns[0][0]
        return [t for a, t in insns if a < start + size]


def check_static(out, manifest):
    by_key = {(s["target"], s["program"], s["variant"]): s for s in manifest["samples"]}
    targets = [t["name"] for t in manifest["targets"]]
    for t in targets:
        arch = next(x["arch"] for x in manifest["targets"] if x["name"] == t)
        img = lambda v, p="core": Image(out, by_key[(t, p, v)])
        base = img("base")
        notes = []
        # s2: the helper is inlined everywhere.
        if base.has("clamp_level") or img("fix2").has("clamp_level"):
            fail(f"{t} s2: clamp_level has a symbol (not inlined)")
        else:
            notes.append("s2 clamp_level inlined")
        # s3 / s5: new function / new global only in their fix (PDB lists functions only).
        n3 = img("fix3").has("normalize_char") and not base.has("normalize_char")
        n5 = t.startswith("pe-") or (img("fix5").has("g_rejected") and not base.has("g_rejected"))
        if n3 and n5:
            notes.append("s3 normalize_char only in fix3" + ("" if t.startswith("pe-") else
                                                              "; s5 g_rejected only in fix5"))
        else:
            fail(f"{t} s3/s5: normalize_char in fix3 only={n3}, g_rejected in fix5 only={n5}")
        # s7: shorter than a long jump.
        limit = 14 if arch == "x86_64" else 16
        sizes = [img(v).size("mask_flags") for v in ("base", "fix7")]
        if all(x is not None and x < limit for x in sizes):
            notes.append(f"s7 mask_flags {sizes[0]}/{sizes[1]} bytes (< {limit})")
        else:
            fail(f"{t} s7: mask_flags sizes {sizes}, limit {limit}")
        # s9: indirect jump through a table.
        jumps = []
        for v in ("base", "fix9"):
            ins = [x for _, x in disasm(img(v).path, "op_apply")]
            jumps.append([x for x in ins if re.match(r"jmpq?\s+\*%r", x) or re.match(r"br\s+x\d+", x)])
        if all(jumps):
            notes.append(f"s9 op_apply table jump `{jumps[0][0]}`")
        else:
            fail(f"{t} s9: op_apply has no table jump (base, fix9): {jumps}")
        # s10: the import call.
        ins = [x for _, x in disasm(base.path, "parse_num")]
        calls = [x for x in ins if x.startswith(("call", "bl", "blr"))]
        if not calls:
            fail(f"{t} s10: parse_num has no call")
        else:
            notes.append(f"s10 parse_num `{calls[0]}`")
        # s12: TLS access.
        ins = " | ".join(x for _, x in disasm(base.path, "tls_accumulate"))
        pat = {"elf": r"%fs:|TPIDR_EL0", "pe": r"%gs:0x58|\[x18, #0x58\]", "mingw": r"__emutls_get_address"}[base.kind]
        if re.search(pat, ins):
            notes.append("s12 tls via " + re.search(pat, ins).group(0))
        else:
            fail(f"{t} s12: tls_accumulate does not reach TLS ({pat})")
        # s13: the neighbour moves but keeps its bytes; digit_count grows.
        f13 = img("fix13")
        a0, a1 = base.addr("mix_hash"), f13.addr("mix_hash")
        d0, d1 = base.size("digit_count"), f13.size("digit_count")
        if a0 == a1 or base.body("mix_hash") != f13.body("mix_hash") or d1 <= d0:
            fail(f"{t} s13: mix_hash {a0:#x}->{a1:#x}, digit_count {d0}->{d1}")
        else:
            notes.append(f"s13 mix_hash {a0:#x}->{a1:#x} same bytes, digit_count {d0}->{d1}")
        ok(f"{t}: " + "; ".join(n for n in notes if n))

        if t.startswith("elf"):
            check_elf(out, t, [s for s in manifest["samples"] if s["target"] == t])
        elif t.startswith("pe-"):
            check_pe(out, t, [s for s in manifest["samples"] if s["target"] == t])


def check_elf(out, t, samples):
    bad = 0
    for s in samples:
        p = os.path.join(out, s["path"])
        hdr = sh(["llvm-readelf-19", "-h", "-d", "-n", "-S", p])
        if not re.search(r"Type:\s+DYN", hdr) or not re.search(r"FLAGS_1\).*PIE", hdr):
            fail(f"{s['path']}: not a PIE")
            bad += 1
        m = re.search(r"Build ID: ([0-9a-f]+)", hdr)
        if not m or m.group(1) != s["build_id"]:
            fail(f"{s['path']}: build-id missing or not in the manifest")
            bad += 1
            continue
        bid = m.group(1)
        link = os.path.join(out, t, "debug", ".build-id", bid[:2], bid[2:] + ".debug")
        if os.path.realpath(link) != os.path.realpath(os.path.join(out, s["debug_path"])):
            fail(f"{s['path']}: build-id link {link} does not lead to {s['debug_path']}")
            bad += 1
        st = sh(["llvm-readelf-19", "-S", "-n", os.path.join(out, s["stripped_path"])])
        if ".gnu_debuglink" not in st or ".symtab" in st or ".debug_info" in st or bid not in st:
            fail(f"{s['stripped_path']}: not stripped / no .gnu_debuglink / no build-id")
            bad += 1
        dbg = sh(["llvm-readelf-19", "-S", os.path.join(out, s["debug_path"])])
        if ".debug_info" not in dbg or ".symtab" not in dbg:
            fail(f"{s['debug_path']}: no .debug_info/.symtab")
            bad += 1
        if "_MergedGlobals" in sh(["llvm-nm-19", p]):
            fail(f"{s['path']}: has _MergedGlobals (clang global merging changes data layout)")
            bad += 1
    if not bad:
        ok(f"{t}: {len(samples)} PIEs with build-id; stripped copies carry .gnu_debuglink + build-id; "
           f"debug/.build-id links resolve")


def check_pe(out, t, samples):
    bad = 0
    for s in samples:
        p = os.path.join(out, s["path"])
        txt = sh(["llvm-readobj-19", "--file-headers", "--coff-load-config", "--coff-imports", p])
        if not re.search(r"LoadConfigTableSize: 0x140", txt) or not re.search(r"HotPatchTableOffset: 0x0\b", txt):
            fail(f"{s['path']}: no 0x140-byte load config with HotPatchTableOffset 0")
            bad += 1
        if not os.path.exists(os.path.join(out, s["pdb_path"])) or \
                os.path.exists(os.path.join(out, s["stripped_path"])[:-4] + ".pdb"):
            fail(f"{s['path']}: PDB missing, or a PDB next to the stripped copy")
            bad += 1
        if s["program"] == "core":
            if "TLSTableSize: 0x28" not in txt or "Name: hfplat.dll" not in txt or "hfplat_strtoi" not in txt:
                fail(f"{s['path']}: no TLS directory or no hfplat.dll import")
                bad += 1
    if not bad:
        ok(f"{t}: {len(samples)} DLLs with load config (HotPatchTableOffset 0) and PDB; core.* have a TLS "
           f"directory and import hfplat_strtoi from hfplat.dll")


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    if len(args) < 1:
        sys.exit("usage: verify.py OUTDIR [--no-run] [--jobs N] [-v]")
    out = os.path.abspath(args[0])
    jobs = 4
    if "--jobs" in sys.argv:
        jobs = int(sys.argv[sys.argv.index("--jobs") + 1])
    with open(os.path.join(out, "samples.json")) as f:
        manifest = json.load(f)
    check_expected_files(out, manifest)
    if "--no-run" not in sys.argv:
        run_all(out, manifest, jobs)
    check_static(out, manifest)
    if failures:
        print(f"{len(failures)} check(s) failed")
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()

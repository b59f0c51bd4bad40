/* hf_serve.h - `PROGRAM serve`: a long-running baseline for live end-to-end tests.
 *
 * Each line read from stdin runs every scenario once and then prints "hf-round-end". A hotpatch
 * applied to the process meanwhile shows in the next round. Every round starts from the
 * program's initial state, so its output is exactly that of a fresh run of whichever build the
 * code in memory now is: the program's writable data (.data, .bss: counters, totals) and its
 * thread-local block are restored from a copy taken before the first round. fork() or a thread
 * per round would be simpler, but both hang under qemu-user on this project's machines.
 * hf_serve() returns 0 (run once, as usual) unless argv[1] is "serve". */
#ifndef HF_SAMPLES_HF_SERVE_H
#define HF_SAMPLES_HF_SERVE_H

#if defined(_WIN32)
#define hf_serve(argc, argv, run) ((void)(argc), (void)(argv), 0)
#else
#include <link.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct hf_region {
    unsigned char *at, *saved;
    size_t size;
};
static struct hf_region hf_regions[4];
static int hf_region_count;

/* The main program's writable PT_LOAD segments, minus the pages RELRO made read-only, and the
 * calling thread's copy of its PT_TLS segment. */
static int hf_find_writable_data(struct dl_phdr_info *info, size_t size, void *unused)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), relro_end = 0;
    (void)size;
    (void)unused;
    for (int i = 0; i < info->dlpi_phnum; ++i)
        if (info->dlpi_phdr[i].p_type == PT_GNU_RELRO)
            relro_end = (info->dlpi_addr + info->dlpi_phdr[i].p_vaddr + info->dlpi_phdr[i].p_memsz) & ~(page - 1);
    for (int i = 0; i < info->dlpi_phnum && hf_region_count < 4; ++i) {
        const ElfW(Phdr) *p = &info->dlpi_phdr[i];
        uintptr_t begin = info->dlpi_addr + p->p_vaddr, end = begin + p->p_memsz;
        if (p->p_type != PT_LOAD || !(p->p_flags & PF_W))
            continue;
        if (relro_end > begin && relro_end <= end)
            begin = relro_end;
        if (begin < end)
            hf_regions[hf_region_count++] = (struct hf_region){(unsigned char *)begin, NULL, end - begin};
    }
    for (int i = 0; i < info->dlpi_phnum && hf_region_count < 4; ++i) {
        const ElfW(Phdr) *p = &info->dlpi_phdr[i];
        unsigned char *block = (unsigned char *)info->dlpi_tls_data;
#if defined(__aarch64__)
        /* glibc leaves dlpi_tls_data null for the executable here; AArch64's TLS layout puts the
         * executable's block right after the 16-byte thread control block, aligned. */
        if (!block && p->p_type == PT_TLS)
            block = (unsigned char *)(((uintptr_t)__builtin_thread_pointer() + 16 + p->p_align - 1) &
                                      ~(uintptr_t)(p->p_align - 1));
#endif
        if (p->p_type == PT_TLS && block)
            hf_regions[hf_region_count++] = (struct hf_region){block, NULL, p->p_memsz};
    }
    return 1; /* the first object is the main program: stop */
}

static inline int hf_serve(int argc, char **argv, void (*run)(void))
{
    char line[64];
    if (argc < 2 || strcmp(argv[1], "serve") != 0)
        return 0;
    dl_iterate_phdr(hf_find_writable_data, NULL);
    for (int r = 0; r < hf_region_count; ++r)
        hf_regions[r].saved = (unsigned char *)malloc(hf_regions[r].size);
    for (int r = 0; r < hf_region_count; ++r)
        memcpy(hf_regions[r].saved, hf_regions[r].at, hf_regions[r].size);
    while (fgets(line, sizeof line, stdin)) {
        for (int r = 0; r < hf_region_count; ++r)
            memcpy(hf_regions[r].at, hf_regions[r].saved, hf_regions[r].size);
        run();
        HF_OUT("hf-round-end\n");
    }
    return 1;
}
#endif

#endif

/* hf_serve.h - `PROGRAM serve`: a long-running baseline for live end-to-end tests.
 *
 * Each line read from stdin runs every scenario once and then prints "hf-round-end". A hotpatch
 * applied to the process meanwhile shows in the next round. Every round starts from the
 * program's initial state, so its output is exactly that of a fresh run of whichever build the
 * code in memory now is: the program's writable data (.data, .bss: counters, totals) is restored
 * from a copy taken before the first round, and each round runs in a new thread (fresh
 * thread-local variables). fork() would be simpler but hangs under qemu-user here.
 * hf_serve() returns 0 (run once, as usual) unless argv[1] is "serve". */
#ifndef HF_SAMPLES_HF_SERVE_H
#define HF_SAMPLES_HF_SERVE_H

#if defined(_WIN32)
#define hf_serve(argc, argv, run) ((void)(argc), (void)(argv), 0)
#else
#include <link.h>
#include <pthread.h>
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

/* The main program's writable PT_LOAD segments, minus the pages RELRO made read-only. */
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
    return 1; /* the first object is the main program: stop */
}

static void *hf_round(void *run)
{
    ((void (*)(void))run)();
    return NULL;
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
        pthread_t thread;
        for (int r = 0; r < hf_region_count; ++r)
            memcpy(hf_regions[r].at, hf_regions[r].saved, hf_regions[r].size);
        if (pthread_create(&thread, NULL, hf_round, (void *)run) == 0)
            pthread_join(thread, NULL);
        HF_OUT("hf-round-end\n");
    }
    return 1;
}
#endif

#endif

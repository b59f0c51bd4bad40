/* live_main.c - driver for the `live` sample (scenario 14).
 *
 *   live ITERATIONS [SLEEP_MS [THREADS]]
 *
 * Starts THREADS workers (default 2, at most 16).  Each calls live_score(i)
 * for i = 0 .. ITERATIONS-1, prints one line per call and sleeps SLEEP_MS
 * (default 10) between calls.  Every line is written and flushed under a
 * lock, so lines never interleave:
 *
 *   live start threads=T iterations=N sleep_ms=M
 *   live t=<thread> i=<i> live_score(<i>)=<value>
 *   live done calls=<T*N>
 *
 * Run time is about ITERATIONS * SLEEP_MS milliseconds. */
#define _GNU_SOURCE 1 /* dl_iterate_phdr, for hf_serve.h */
#include "live.h"
#include "hf_out.h"
#include <stdlib.h>
#include <string.h>

#if defined(_WIN32)
#include <windows.h>
typedef CRITICAL_SECTION hf_lock_t;
#define hf_lock_init(l) InitializeCriticalSection(l)
#define hf_lock(l) EnterCriticalSection(l)
#define hf_unlock(l) LeaveCriticalSection(l)
static void hf_sleep_ms(int ms) { Sleep((DWORD)ms); }
#else
#include <pthread.h>
#include <time.h>
typedef pthread_mutex_t hf_lock_t;
#define hf_lock_init(l) pthread_mutex_init((l), NULL)
#define hf_lock(l) pthread_mutex_lock(l)
#define hf_unlock(l) pthread_mutex_unlock(l)
static void hf_sleep_ms(int ms)
{
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0) {
    }
}
#endif

#define MAX_THREADS 16

static hf_lock_t out_lock;
static int iterations = 10;
static int sleep_ms = 10;

struct worker {
    int id;
    int calls;
};

static void run_worker(struct worker *w)
{
    for (int i = 0; i < iterations; ++i) {
        int v = live_score(HF_IN(i));
        hf_lock(&out_lock);
        HF_OUT("live t=%d i=%d live_score(%d)=%d\n", w->id, i, i, v);
        hf_unlock(&out_lock);
        w->calls++;
        if (sleep_ms > 0)
            hf_sleep_ms(sleep_ms);
    }
}

#if defined(_WIN32)
static DWORD WINAPI worker_entry(LPVOID arg)
{
    run_worker((struct worker *)arg);
    return 0;
}
#else
static void *worker_entry(void *arg)
{
    run_worker((struct worker *)arg);
    return NULL;
}
#endif

static int parse_arg(const char *s, int lo, int hi, int *out)
{
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || v < lo || v > hi)
        return 0;
    *out = (int)v;
    return 1;
}

int main(int argc, char **argv)
{
    int threads = 2;
    hf_out_init();
    if (argc < 2 || argc > 4 || !parse_arg(argv[1], 1, 100000000, &iterations) ||
        (argc > 2 && !parse_arg(argv[2], 0, 3600000, &sleep_ms)) ||
        (argc > 3 && !parse_arg(argv[3], 1, MAX_THREADS, &threads))) {
        fprintf(stderr, "usage: live ITERATIONS [SLEEP_MS [THREADS]]\n"
                        "  ITERATIONS 1..100000000, SLEEP_MS 0..3600000 (default 10), "
                        "THREADS 1..16 (default 2)\n");
        return 2;
    }
    hf_lock_init(&out_lock);
    HF_OUT("live start threads=%d iterations=%d sleep_ms=%d\n", threads, iterations, sleep_ms);

    struct worker w[MAX_THREADS];
    memset(w, 0, sizeof w);
#if defined(_WIN32)
    HANDLE h[MAX_THREADS];
#else
    pthread_t h[MAX_THREADS];
#endif
    for (int t = 0; t < threads; ++t) {
        w[t].id = t;
#if defined(_WIN32)
        h[t] = CreateThread(NULL, 0, worker_entry, &w[t], 0, NULL);
        if (h[t] == NULL) {
            fprintf(stderr, "live: CreateThread failed\n");
            return 1;
        }
#else
        if (pthread_create(&h[t], NULL, worker_entry, &w[t]) != 0) {
            fprintf(stderr, "live: pthread_create failed\n");
            return 1;
        }
#endif
    }
    int calls = 0;
    for (int t = 0; t < threads; ++t) {
#if defined(_WIN32)
        WaitForSingleObject(h[t], INFINITE);
        CloseHandle(h[t]);
#else
        pthread_join(h[t], NULL);
#endif
        calls += w[t].calls;
    }
    HF_OUT("live done calls=%d\n", calls);
    return 0;
}

/*
 * Memory read bandwidth: threads sum disjoint parts of a large buffer of floats with a
 * vectorized loop (no stores), best of several passes; the passes alternate between one read
 * stream per thread and four (four parts of the thread's range walked side by side, which some
 * machines need to reach their bandwidth), and the buffer asks for 2 MiB pages, so the figure
 * is the best this machine showed, whichever way. Prints one line, "<GB/s> GB/s",
 * with GB = 10^9 bytes.
 *
 *   cc -O3 -mavx2 -mfma -pthread scripts/membw.c -o membw && ./membw [THREADS=2] [MiB=2048] [PASSES=5]
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <immintrin.h>
#include <sys/mman.h>

typedef struct {
    const float *data;
    size_t count;
    int streams; /* 1 or 4 */
    double sum;
} Part;

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Four independent accumulators of 8 floats; with four streams each takes one part. */
static void *sum_part(void *arg) {
    Part *p = arg;
    const size_t step = p->streams == 4 ? p->count / 4 / 32 * 32 : 0;
    const size_t end = p->streams == 4 ? step : p->count / 32 * 32;
    const float *x0 = p->data, *x1 = x0 + step, *x2 = x1 + step, *x3 = x2 + step;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    if (p->streams == 4) {
        for (size_t i = 0; i < end; i += 32)
            for (int k = 0; k < 32; k += 8) {
                a0 = _mm256_add_ps(a0, _mm256_load_ps(x0 + i + k));
                a1 = _mm256_add_ps(a1, _mm256_load_ps(x1 + i + k));
                a2 = _mm256_add_ps(a2, _mm256_load_ps(x2 + i + k));
                a3 = _mm256_add_ps(a3, _mm256_load_ps(x3 + i + k));
            }
    } else {
        for (size_t i = 0; i < end; i += 32) {
            a0 = _mm256_add_ps(a0, _mm256_load_ps(x0 + i));
            a1 = _mm256_add_ps(a1, _mm256_load_ps(x0 + i + 8));
            a2 = _mm256_add_ps(a2, _mm256_load_ps(x0 + i + 16));
            a3 = _mm256_add_ps(a3, _mm256_load_ps(x0 + i + 24));
        }
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    double s = 0;
    for (int k = 0; k < 8; k++) s += lanes[k];
    for (size_t i = p->streams == 4 ? 4 * step : end; i < p->count; i++) s += p->data[i];
    p->sum = s;
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    long mib = argc > 2 ? atol(argv[2]) : 2048;
    int passes = argc > 3 ? atoi(argv[3]) : 5;
    if (threads < 1 || threads > 256 || mib < 1 || passes < 1) {
        fprintf(stderr, "usage: membw [THREADS>=1] [MiB>=1] [PASSES>=1]\n");
        return 2;
    }
    size_t bytes = (size_t)mib << 20;
    size_t count = bytes / sizeof(float);
    float *data = aligned_alloc(64, bytes);
    if (!data) {
        fprintf(stderr, "membw: cannot allocate %ld MiB\n", mib);
        return 1;
    }
    madvise(data, bytes, MADV_HUGEPAGE); /* a hint: as the model files' mappings */
    for (size_t i = 0; i < count; i++) data[i] = (float)(i & 1023) * 0.001f; /* touch every page */

    pthread_t tid[256];
    Part parts[256];
    double best = 0, check = 0;
    for (int pass = 0; pass < 2 * passes; pass++) {
        double t0 = seconds();
        for (int t = 0; t < threads; t++) {
            size_t lo = count * t / threads / 32 * 32, hi = t + 1 == threads ? count : count * (t + 1) / threads / 32 * 32;
            parts[t] = (Part){data + lo, hi - lo, pass % 2 ? 4 : 1, 0};
            pthread_create(&tid[t], NULL, sum_part, &parts[t]);
        }
        check = 0;
        for (int t = 0; t < threads; t++) {
            pthread_join(tid[t], NULL);
            check += parts[t].sum;
        }
        double gbs = bytes / (seconds() - t0) / 1e9;
        if (gbs > best) best = gbs;
    }
    fprintf(stderr, "membw: %d threads, %ld MiB, best of %d passes of each kind (checksum %.6g)\n", threads, mib, passes, check);
    printf("%.2f GB/s\n", best);
    free(data);
    return 0;
}

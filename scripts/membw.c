/*
 * Memory read bandwidth: threads sum disjoint parts of a large buffer of floats with a
 * vectorized loop (no stores), best of several passes. Prints one line, "<GB/s> GB/s",
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

typedef struct {
    const float *data;
    size_t count;
    double sum;
} Part;

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Four independent accumulators of 8 floats, 128 bytes per iteration. */
static void *sum_part(void *arg) {
    Part *p = arg;
    const float *x = p->data;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 32 <= p->count; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_load_ps(x + i));
        a1 = _mm256_add_ps(a1, _mm256_load_ps(x + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_load_ps(x + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_load_ps(x + i + 24));
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    double s = 0;
    for (int k = 0; k < 8; k++) s += lanes[k];
    for (; i < p->count; i++) s += x[i];
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
    for (size_t i = 0; i < count; i++) data[i] = (float)(i & 1023) * 0.001f; /* touch every page */

    pthread_t tid[256];
    Part parts[256];
    double best = 0, check = 0;
    for (int pass = 0; pass < passes; pass++) {
        double t0 = seconds();
        for (int t = 0; t < threads; t++) {
            size_t lo = count * t / threads / 32 * 32, hi = t + 1 == threads ? count : count * (t + 1) / threads / 32 * 32;
            parts[t] = (Part){data + lo, hi - lo, 0};
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
    fprintf(stderr, "membw: %d threads, %ld MiB, best of %d passes (checksum %.6g)\n", threads, mib, passes, check);
    printf("%.2f GB/s\n", best);
    free(data);
    return 0;
}

// Portable scalar implementation: the reference path and the fallback for CPUs
// without AVX2.

#include "internal.h"

// MARK: - Row dot products

static float dot_q4_0_q8_0(const void *w, const void *a, int64_t n) {
    const lk_block_q4_0 *x = (const lk_block_q4_0 *)w;
    const lk_block_q8_0 *y = (const lk_block_q8_0 *)a;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / 32; i++) {
        int32_t isum = 0;
        for (int j = 0; j < 16; j++) {
            isum += ((x[i].qs[j] & 0xf) - 8) * y[i].qs[j];
            isum += ((x[i].qs[j] >> 4) - 8) * y[i].qs[j + 16];
        }
        sum += (float)isum * (lk_half_to_float(x[i].d) * lk_half_to_float(y[i].d));
    }
    return sum;
}

static float dot_q8_0_q8_0(const void *w, const void *a, int64_t n) {
    const lk_block_q8_0 *x = (const lk_block_q8_0 *)w;
    const lk_block_q8_0 *y = (const lk_block_q8_0 *)a;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / 32; i++) {
        int32_t isum = 0;
        for (int j = 0; j < 32; j++) isum += x[i].qs[j] * y[i].qs[j];
        sum += (float)isum * (lk_half_to_float(x[i].d) * lk_half_to_float(y[i].d));
    }
    return sum;
}

static float dot_q4_K_q8_K(const void *w, const void *a, int64_t n) {
    const lk_block_q4_K *x = (const lk_block_q4_K *)w;
    const lk_block_q8_K *y = (const lk_block_q8_K *)a;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / 256; i++) {
        int32_t scaled = 0, mins = 0;
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            lk_q4_K_scale_min(j, x[i].scales, &sc, &m);
            const uint8_t *q = x[i].qs + 32 * (j / 2);
            const int8_t *a8 = y[i].qs + 32 * j;
            int shift = (j & 1) ? 4 : 0;
            int32_t isum = 0;
            for (int l = 0; l < 32; l++) isum += ((q[l] >> shift) & 0xf) * a8[l];
            scaled += sc * isum;
            mins += m * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]);
        }
        sum += y[i].d * (lk_half_to_float(x[i].d) * (float)scaled - lk_half_to_float(x[i].dmin) * (float)mins);
    }
    return sum;
}

static float dot_q6_K_q8_K(const void *w, const void *a, int64_t n) {
    const lk_block_q6_K *x = (const lk_block_q6_K *)w;
    const lk_block_q8_K *y = (const lk_block_q8_K *)a;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / 256; i++) {
        int8_t q[256];
        for (int half = 0; half < 2; half++) {
            const uint8_t *ql = x[i].ql + 64 * half;
            const uint8_t *qh = x[i].qh + 32 * half;
            int8_t *qq = q + 128 * half;
            for (int l = 0; l < 32; l++) {
                qq[l] = (int8_t)(((ql[l] & 0xf) | (((qh[l] >> 0) & 3) << 4)) - 32);
                qq[l + 32] = (int8_t)(((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32);
                qq[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                qq[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
            }
        }
        int32_t isum = 0;
        for (int j = 0; j < 16; j++) {
            int32_t part = 0;
            for (int l = 0; l < 16; l++) part += q[16 * j + l] * y[i].qs[16 * j + l];
            isum += x[i].scales[j] * part;
        }
        sum += y[i].d * lk_half_to_float(x[i].d) * (float)isum;
    }
    return sum;
}

static float dot_f32_f32(const void *w, const void *a, int64_t n) {
    const float *x = (const float *)w, *y = (const float *)a;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) sum += x[i] * y[i];
    return sum;
}

static float dot_f16_f32_row(const void *w, const void *a, int64_t n) {
    const uint16_t *x = (const uint16_t *)w;
    const float *y = (const float *)a;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) sum += lk_half_to_float(x[i]) * y[i];
    return sum;
}

static float dot_bf16_f32_row(const void *w, const void *a, int64_t n) {
    const uint16_t *x = (const uint16_t *)w;
    const float *y = (const float *)a;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) sum += lk_bf16_to_float(x[i]) * y[i];
    return sum;
}

// MARK: - Products

#define LK_SCALAR_MATMUL(name, dot)                                                          \
    static void name(const void *W, size_t w_row_stride, int64_t ncols,                      \
                     const void *xq, size_t xq_row_stride, int64_t nbatch,                   \
                     float *out, int64_t out_row_stride, int64_t row_begin, int64_t row_end) { \
        for (int64_t b = 0; b < nbatch; b++) {                                               \
            const void *x = (const uint8_t *)xq + (size_t)b * xq_row_stride;                 \
            for (int64_t r = row_begin; r < row_end; r++) {                                  \
                const void *w = (const uint8_t *)W + (size_t)r * w_row_stride;               \
                out[b * out_row_stride + r] = dot(w, x, ncols);                              \
            }                                                                                \
        }                                                                                    \
    }

LK_SCALAR_MATMUL(matmul_f32_scalar, dot_f32_f32)
LK_SCALAR_MATMUL(matmul_f16_scalar, dot_f16_f32_row)
LK_SCALAR_MATMUL(matmul_bf16_scalar, dot_bf16_f32_row)
LK_SCALAR_MATMUL(matmul_q4_0_scalar, dot_q4_0_q8_0)
LK_SCALAR_MATMUL(matmul_q8_0_scalar, dot_q8_0_q8_0)
LK_SCALAR_MATMUL(matmul_q4_K_scalar, dot_q4_K_q8_K)
LK_SCALAR_MATMUL(matmul_q6_K_scalar, dot_q6_K_q8_K)

// MARK: - Vector helpers

static float dot_f32_scalar(const float *a, const float *b, int64_t n) { return dot_f32_f32(a, b, n); }

static void axpy_f32_scalar(int64_t n, float a, const float *x, float *y) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

static float dot_f16_f32_scalar(const uint16_t *a, const float *b, int64_t n) { return dot_f16_f32_row(a, b, n); }

static void axpy_f16_scalar(int64_t n, float a, const uint16_t *x, float *y) {
    for (int64_t i = 0; i < n; i++) y[i] += a * lk_half_to_float(x[i]);
}

static void f16_to_f32_scalar(const uint16_t *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = lk_half_to_float(src[i]);
}

static void f32_to_f16_scalar(const float *src, uint16_t *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = lk_float_to_half(src[i]);
}

const lk_impl lk_impl_scalar = {
    .matmul_f32 = matmul_f32_scalar,
    .matmul_f16 = matmul_f16_scalar,
    .matmul_bf16 = matmul_bf16_scalar,
    .matmul_q4_0 = matmul_q4_0_scalar,
    .matmul_q8_0 = matmul_q8_0_scalar,
    .matmul_q4_K = matmul_q4_K_scalar,
    .matmul_q6_K = matmul_q6_K_scalar,
    .dot_f32 = dot_f32_scalar,
    .axpy_f32 = axpy_f32_scalar,
    .dot_f16_f32 = dot_f16_f32_scalar,
    .axpy_f16 = axpy_f16_scalar,
    .f16_to_f32 = f16_to_f32_scalar,
    .f32_to_f16 = f32_to_f16_scalar,
};

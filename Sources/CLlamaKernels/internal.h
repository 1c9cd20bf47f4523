#pragma once
// Shared definitions of the kernel implementation files.

#include "llama_kernels.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

// MARK: - GGML block layouts

#define LK_QK4_0 32
#define LK_QK8_0 32
#define LK_QK_K 256

typedef struct {
    uint16_t d;
    uint8_t qs[16];
} lk_block_q4_0;

typedef struct {
    uint16_t d;
    int8_t qs[32];
} lk_block_q8_0;

typedef struct {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[12];
    uint8_t qs[128];
} lk_block_q4_K;

typedef struct {
    uint8_t ql[128];
    uint8_t qh[64];
    int8_t scales[16];
    uint16_t d;
} lk_block_q6_K;

typedef struct {
    float d;
    int8_t qs[256];
    int16_t bsums[16];
} lk_block_q8_K;

_Static_assert(sizeof(lk_block_q4_0) == 18, "Q4_0 block size");
_Static_assert(sizeof(lk_block_q8_0) == 34, "Q8_0 block size");
_Static_assert(sizeof(lk_block_q4_K) == 144, "Q4_K block size");
_Static_assert(sizeof(lk_block_q6_K) == 210, "Q6_K block size");
_Static_assert(sizeof(lk_block_q8_K) == 292, "Q8_K block size");

// MARK: - Activation row layout
//
// Q8_0 activations (for Q4_0 and Q8_0 weights), with nb = n / 32 blocks in
// G = ceil(nb / 4) groups of four and S = ceil(G / 4) superblocks of four
// groups (16 blocks); blocks past nb are zero everywhere:
//   - nb GGML Q8_0 blocks (read by the AVX2 and portable kernels);
//   - at the next 64-byte boundary, a copy of the quants for 512-bit loads,
//     512 bytes per superblock, interleaved: 64-byte row k (0..7) of superblock
//     s holds in its 32-bit word 4i + g quants 4k..4k+3 of block 16s + 4g + i;
//   - 16S float block scales, 16S int32 corrections for Q4_0 weights (-8 times
//     the block's quant sum: the nibbles are stored plus 8) and 16S for Q8_0
//     weights (-128 times the quant sum: the kernels add 128 to make them
//     unsigned), each in the same order: entry 16s + 4i + g belongs to block
//     16s + 4g + i.
//
// Q8_K activations (for Q4_K and Q6_K): plain GGML Q8_K blocks.

static inline size_t lk_align64(size_t x) { return (x + 63) & ~(size_t)63; }

static inline int64_t lk_q8_act_superblocks(int64_t n) { return ((n / 32 + 3) / 4 + 3) / 4; }

static inline size_t lk_q8_act_aux_offset(int64_t n) {
    return lk_align64((size_t)(n / 32) * sizeof(lk_block_q8_0));
}
static inline size_t lk_q8_act_scales_offset(int64_t n) {
    return lk_q8_act_aux_offset(n) + (size_t)lk_q8_act_superblocks(n) * 512;
}
static inline size_t lk_q8_act_corr4_offset(int64_t n) {
    return lk_q8_act_scales_offset(n) + (size_t)lk_q8_act_superblocks(n) * 16 * sizeof(float);
}
static inline size_t lk_q8_act_corr8_offset(int64_t n) {
    return lk_q8_act_corr4_offset(n) + (size_t)lk_q8_act_superblocks(n) * 16 * sizeof(int32_t);
}
static inline size_t lk_q8_act_size(int64_t n) {
    return lk_align64(lk_q8_act_corr8_offset(n) + (size_t)lk_q8_act_superblocks(n) * 16 * sizeof(int32_t));
}

// MARK: - Scalar half and bfloat conversions

static inline float lk_bits_to_float(uint32_t bits) {
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint32_t lk_float_to_bits(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    return bits;
}

static inline float lk_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exponent = (h >> 10) & 0x1f;
    uint32_t mantissa = h & 0x3ff;
    if (exponent == 0) {
        float magnitude = (float)mantissa * 5.9604644775390625e-8f;  // 2^-24
        return sign ? -magnitude : magnitude;
    }
    if (exponent == 31) {
        // Infinity, or NaN made quiet with its payload kept (as F16C converts).
        uint32_t bits = sign | 0x7f800000u | (mantissa << 13);
        if (mantissa != 0) bits |= 0x00400000u;
        return lk_bits_to_float(bits);
    }
    return lk_bits_to_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

static inline uint16_t lk_float_to_half(float f) {
    uint32_t x = lk_float_to_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) {  // infinity or NaN (NaN stays quiet NaN)
        return sign | 0x7c00 | (ax > 0x7f800000u ? (uint16_t)(0x200 | ((ax >> 13) & 0x3ff)) : 0);
    }
    if (ax >= 0x477ff000u) return sign | 0x7c00;  // rounds to infinity
    if (ax < 0x38800000u) {  // below 2^-14: subnormal half or zero
        float scaled = lk_bits_to_float(ax) * 16777216.0f;  // exact
        return sign | (uint16_t)nearbyintf(scaled);
    }
    uint32_t rounded = ax + 0xfff + ((ax >> 13) & 1) - 0x38000000u;
    return sign | (uint16_t)(rounded >> 13);
}

static inline float lk_bf16_to_float(uint16_t h) { return lk_bits_to_float((uint32_t)h << 16); }

static inline uint16_t lk_float_to_bf16(float f) {
    uint32_t x = lk_float_to_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

// Q4_K: 6-bit scale and min of sub-block j (0..7).
static inline void lk_q4_K_scale_min(int j, const uint8_t *q, uint8_t *scale, uint8_t *min) {
    if (j < 4) {
        *scale = q[j] & 63;
        *min = q[j + 4] & 63;
    } else {
        *scale = (uint8_t)((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4));
        *min = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

// MARK: - Shared by the portable and vector paths

// Clears what the blocks of an activation row (n / 32 of them) leave untouched:
// the padding entries of its last superblock.
static inline void lk_q8_act_clear_padding(void *row, int64_t n) {
    const int64_t nb = n / 32;
    if (nb % 16 == 0) return;
    uint8_t *base = (uint8_t *)row;
    const int64_t last = lk_q8_act_superblocks(n) - 1;
    memset(base + lk_q8_act_aux_offset(n) + last * 512, 0, 512);
    memset(base + lk_q8_act_scales_offset(n) + last * 64, 0, 64);
    memset(base + lk_q8_act_corr4_offset(n) + last * 64, 0, 64);
    memset(base + lk_q8_act_corr8_offset(n) + last * 64, 0, 64);
}

// Copies Q8_0 block i of an activation row (its quants summing to `sum`) into the
// interleaved quants, scales and corrections of the row (layout above).
static inline void lk_q8_act_place(void *row, int64_t n, int64_t i, const lk_block_q8_0 *block, int32_t sum) {
    uint8_t *base = (uint8_t *)row;
    const int64_t at = (i / 16) * 16 + (i % 4) * 4 + (i % 16) / 4;  // block 16s + 4g + k at 16s + 4k + g
    ((float *)(base + lk_q8_act_scales_offset(n)))[at] = lk_half_to_float(block->d);
    ((int32_t *)(base + lk_q8_act_corr4_offset(n)))[at] = -8 * sum;
    ((int32_t *)(base + lk_q8_act_corr8_offset(n)))[at] = -128 * sum;
    // 32-bit word k (quants 4k..4k+3) at word `at` of the superblock's row k.
    int8_t *sb = (int8_t *)(base + lk_q8_act_aux_offset(n)) + (i / 16) * 512 + 4 * (at % 16);
    for (int k = 0; k < 8; k++) memcpy(sb + 64 * k, block->qs + 4 * k, 4);
}

// Softmax of s[0..n) in place: exponentials of the differences from the maximum,
// summed in order, then scaled by the inverse of the sum.
static inline void lk_softmax(float *s, int64_t n) {
    float max = -INFINITY;
    for (int64_t p = 0; p < n; p++)
        if (s[p] > max) max = s[p];
    float sum = 0;
    for (int64_t p = 0; p < n; p++) {
        float e = expf(s[p] - max);
        s[p] = e;
        sum += e;
    }
    float inv = 1 / sum;
    for (int64_t p = 0; p < n; p++) s[p] *= inv;
}

// MARK: - Per-instruction-set implementations

typedef void (*lk_matmul_fn)(const void *W, size_t w_row_stride, int64_t ncols,
                             const void *xq, size_t xq_row_stride, int64_t nbatch,
                             float *out, int64_t out_row_stride,
                             int64_t row_begin, int64_t row_end);

typedef struct {
    lk_matmul_fn matmul_f32, matmul_f16, matmul_bf16;
    lk_matmul_fn matmul_q4_0, matmul_q8_0, matmul_q4_K, matmul_q6_K;
    float (*dot_f32)(const float *, const float *, int64_t);
    void (*axpy_f32)(int64_t, float, const float *, float *);
    float (*dot_f16_f32)(const uint16_t *, const float *, int64_t);
    void (*axpy_f16)(int64_t, float, const uint16_t *, float *);
    void (*f16_to_f32)(const uint16_t *, float *, int64_t);
    void (*f32_to_f16)(const float *, uint16_t *, int64_t);
    // Optional (may be null): lk_quantize_activations for Q4_0 and Q8_0 weights, producing
    // the same bytes as the portable loop.
    void (*quantize_q8_act)(const float *x, void *dst, int64_t n);
    // Optional (may be null): lk_matmul_x8 for Q4_0 and Q8_0 (W: the repacked groups,
    // w_row_stride unused).
    lk_matmul_fn matmul_q4_0_x8, matmul_q8_0_x8;
    // Optional (may be null): lk_swiglu.
    void (*swiglu)(float *gate, const float *up, int64_t n);
    // Optional (may be null): lk_attention for head sizes that are multiples of 32 up to
    // 256, with the arithmetic of the generic loop over dot_f32 and axpy_f32.
    void (*attention)(const float *q, int64_t q_stride, int64_t nkv, int64_t group, const float *k,
                      const float *v, int64_t kv_stride, int64_t head_dim, int64_t npos, float scale, float *scores,
                      float *out, int64_t out_stride);
    // Optional (may be null): lk_attention_f16, the same for keys and values stored as
    // halves, with the arithmetic of the generic loop over dot_f16_f32 and axpy_f16.
    void (*attention_f16)(const float *q, int64_t q_stride, int64_t nkv, int64_t group, const uint16_t *k,
                          const uint16_t *v, int64_t kv_stride, int64_t head_dim, int64_t npos, float scale, float *scores,
                          float *out, int64_t out_stride);
} lk_impl;

extern const lk_impl lk_impl_scalar;
#if defined(__x86_64__)
extern const lk_impl lk_impl_avx2;
extern const lk_impl lk_impl_avx512;
#endif

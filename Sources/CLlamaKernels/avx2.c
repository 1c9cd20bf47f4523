// AVX2 implementation (with FMA and F16C; 256-bit vectors, no VNNI).

#include "internal.h"

#if defined(__x86_64__)

#include <immintrin.h>

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)

#define LK_INLINE static inline __attribute__((always_inline))

// MARK: - Helpers

LK_INLINE float lk_h2f(uint16_t h) { return _cvtsh_ss(h); }

LK_INLINE float lk_hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// Sum of signed products of 32 int8 pairs into 8 int32 lanes (|a| <= 127).
LK_INLINE __m256i lk_dot_s8(__m256i w, __m256i a) {
    __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

// MARK: - Q4_0: eight weight rows at a time, one row per lane
//
// Without VNNI a block's dot product costs several instructions, and a horizontal sum at the
// end of each row; here eight rows share every instruction instead. A block of eight rows is
// transposed on the fly (four 32-bit words of each row's 16 bytes: 8 shuffles), so that 32-bit
// lane j of register k holds quants 4k..4k+3 of row j (k < 4 from the low nibbles, k >= 4 from
// the high ones, all as unsigned 0..15). Each of the eight registers meets a broadcast of the
// matching four activation quants in one maddubs; the eight 16-bit results are summed
// (|sum| <= 8 * 2 * 15 * 128 < 2^15, exact), widened once, and corrected by the activation
// block's -8 * quant sum: lane j then holds row j's exact integer dot product of the block.
// It is scaled by the two block scales and added with one FMA, so every output element is the
// sequence acc = fma(dot_i, d_w,i * d_a,i, acc) over blocks i in order, whatever the tile:
// the rows past the last multiple of eight compute exactly that sequence one at a time, and
// results do not depend on the batch or on how rows are split.

LK_INLINE int32_t lk_load_i32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

// Block i of rows W, W + ws, ..., W + 7 ws: quant registers g and the eight block scales.
LK_INLINE void lk_q4_0x8_unpack(const uint8_t *W, size_t ws, int64_t i, __m256i g[8], __m256 *d) {
    const lk_block_q4_0 *x0 = (const lk_block_q4_0 *)W + i;
#define LK_ROW(j) ((const lk_block_q4_0 *)((const uint8_t *)x0 + (size_t)(j) * ws))
#define LK_PAIR(j) _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)LK_ROW(j)->qs)), \
                                           _mm_loadu_si128((const __m128i *)LK_ROW((j) + 4)->qs), 1)
    const __m256i y0 = LK_PAIR(0), y1 = LK_PAIR(1), y2 = LK_PAIR(2), y3 = LK_PAIR(3);
    const __m256i a = _mm256_unpacklo_epi32(y0, y1), b = _mm256_unpacklo_epi32(y2, y3);
    const __m256i c = _mm256_unpackhi_epi32(y0, y1), e = _mm256_unpackhi_epi32(y2, y3);
    const __m256i w[4] = {_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b),
                          _mm256_unpacklo_epi64(c, e), _mm256_unpackhi_epi64(c, e)};
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int k = 0; k < 4; k++) {
        g[k] = _mm256_and_si256(w[k], m4);
        g[k + 4] = _mm256_and_si256(_mm256_srli_epi16(w[k], 4), m4);
    }
    const __m128i h = _mm_setr_epi16((short)LK_ROW(0)->d, (short)LK_ROW(1)->d, (short)LK_ROW(2)->d, (short)LK_ROW(3)->d,
                                     (short)LK_ROW(4)->d, (short)LK_ROW(5)->d, (short)LK_ROW(6)->d, (short)LK_ROW(7)->d);
    *d = _mm256_cvtph_ps(h);
#undef LK_PAIR
#undef LK_ROW
}

// Position of block i's entry in the activation row's scale and correction arrays.
LK_INLINE int64_t lk_q8_act_at(int64_t i) { return (i / 16) * 16 + (i % 4) * 4 + (i % 16) / 4; }

// Adds block i of eight rows (quant registers g, scales dw) times activation rows 0..nrows-1.
LK_INLINE void lk_q4_0x8_accumulate(int nrows, const __m256i g[8], __m256 dw, int64_t i, const uint8_t *xq, size_t xs,
                                    const float *scales, const int32_t *corr, __m256i ones, __m256 *acc) {
    const int64_t at = lk_q8_act_at(i);
    for (int b = 0; b < nrows; b++) {
        const lk_block_q8_0 *y = (const lk_block_q8_0 *)(xq + (size_t)b * xs) + i;
        __m256i s = _mm256_maddubs_epi16(g[0], _mm256_set1_epi32(lk_load_i32(y->qs)));
        for (int k = 1; k < 8; k++)
            s = _mm256_add_epi16(s, _mm256_maddubs_epi16(g[k], _mm256_set1_epi32(lk_load_i32(y->qs + 4 * k))));
        const int32_t c = *(const int32_t *)((const uint8_t *)(corr + at) + (size_t)b * xs);
        __m256i dot = _mm256_add_epi32(_mm256_madd_epi16(s, ones), _mm256_set1_epi32(c));
        // The row's block scale as a float (placed by the quantizer): one broadcast load
        // instead of a half load, conversion and broadcast per block and row.
        const float da = *(const float *)((const uint8_t *)(scales + at) + (size_t)b * xs);
        __m256 scale = _mm256_mul_ps(dw, _mm256_set1_ps(da));
        acc[b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc[b]);
    }
}

// Rows r..r+7 times activation rows 0..nrows-1 (nrows <= LK_Q4_0X8_COLS): each block of the
// eight rows is unpacked once for all of them; their accumulators live in L1 between blocks.
// The rows come from the original rows W (ws bytes apart), transposed on the fly, or
// (`packed`, a constant at each use) from a group repacked by lk_x8_pack at W, where a block
// of eight rows is four plain loads and one scale conversion.
#define LK_Q4_0X8_COLS 16
LK_INLINE void lk_q4_0x8_walk(int nrows, const int packed, const uint8_t *W, size_t ws, int64_t n, const uint8_t *xq,
                              size_t xs, float *out, int64_t os) {
    const int64_t nb = n / 32;
    const __m256i ones = _mm256_set1_epi16(1), m4 = _mm256_set1_epi8(0x0f);
    const float *scales = (const float *)(xq + lk_q8_act_scales_offset(n));
    const int32_t *corr = (const int32_t *)(xq + lk_q8_act_corr4_offset(n));
    __m256 acc[LK_Q4_0X8_COLS];
    for (int b = 0; b < nrows; b++) acc[b] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        __m256i g[8];
        __m256 dw;
        if (packed) {
            const uint8_t *p = W + (size_t)i * 144;
            dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
            for (int k = 0; k < 4; k++) {
                const __m256i w = _mm256_loadu_si256((const __m256i *)(p + 16 + 32 * k));
                g[k] = _mm256_and_si256(w, m4);
                g[k + 4] = _mm256_and_si256(_mm256_srli_epi16(w, 4), m4);
            }
        } else {
            lk_q4_0x8_unpack(W, ws, i, g, &dw);
        }
        lk_q4_0x8_accumulate(nrows, g, dw, i, xq, xs, scales, corr, ones, acc);
    }
    for (int b = 0; b < nrows; b++) _mm256_storeu_ps(out + b * os, acc[b]);
}

LK_INLINE void lk_q4_0x8_rows(int nrows, const uint8_t *W, size_t ws, int64_t n, const uint8_t *xq, size_t xs,
                              float *out, int64_t os) {
    lk_q4_0x8_walk(nrows, 0, W, ws, n, xq, xs, out, os);
}

LK_INLINE void lk_q4_0x8p_rows(int nrows, const uint8_t *G, int64_t n, const uint8_t *xq, size_t xs,
                               float *out, int64_t os) {
    lk_q4_0x8_walk(nrows, 1, G, 0, n, xq, xs, out, os);
}

// One activation row times m <= 4 groups of eight repacked rows from different parts of the
// matrix, walked side by side: m sequential read streams per thread instead of one, which
// this kind of machine (2 cores, no AVX-512) needs to come near its read bandwidth in decode
// (7b-4l decode 44 -> 65-73 tok/s here, alternating). The same integer sums in another order
// (exact), the same scale products and the same FMA per block: bitwise the rows' result.
LK_INLINE void lk_q4_0x8p_multi(const int m, const uint8_t *const *G, int64_t n, const uint8_t *xq, float *const *outs) {
    const int64_t nb = n / 32;
    const __m256i ones = _mm256_set1_epi16(1), m4 = _mm256_set1_epi8(0x0f);
    const float *scales = (const float *)(xq + lk_q8_act_scales_offset(n));
    const int32_t *corr = (const int32_t *)(xq + lk_q8_act_corr4_offset(n));
    __m256 acc[4];
    for (int j = 0; j < m; j++) acc[j] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const lk_block_q8_0 *y = (const lk_block_q8_0 *)xq + i;
        const __m256i c = _mm256_set1_epi32(corr[lk_q8_act_at(i)]);
        const __m256 da = _mm256_set1_ps(scales[lk_q8_act_at(i)]);
        __m256i s[4];
        for (int j = 0; j < m; j++) s[j] = _mm256_setzero_si256();
        for (int k = 0; k < 4; k++) {
            const __m256i a_lo = _mm256_set1_epi32(lk_load_i32(y->qs + 4 * k));
            const __m256i a_hi = _mm256_set1_epi32(lk_load_i32(y->qs + 4 * (k + 4)));
            for (int j = 0; j < m; j++) {
                const __m256i w = _mm256_loadu_si256((const __m256i *)(G[j] + (size_t)i * 144 + 16 + 32 * k));
                s[j] = _mm256_add_epi16(s[j], _mm256_maddubs_epi16(_mm256_and_si256(w, m4), a_lo));
                s[j] = _mm256_add_epi16(s[j], _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(w, 4), m4), a_hi));
            }
        }
        for (int j = 0; j < m; j++) {
            const __m256 d = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(G[j] + (size_t)i * 144))), da);
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_madd_epi16(s[j], ones), c)), d, acc[j]);
        }
    }
    for (int j = 0; j < m; j++) _mm256_storeu_ps(outs[j], acc[j]);
}

// The product on repacked groups (`block` bytes per block of eight rows): a decode step (one
// activation row) cuts the range's groups into four parts walked side by side by `multi`;
// batches go through `rowsp`, up to LK_Q4_0X8_COLS activation rows per unpacking.
#define LK_X8P_MATMUL(name, block, rowsp, multi)                                                              \
    static void name(const void *P, size_t unused, int64_t n, const void *xq, size_t xs, int64_t nbatch,      \
                     float *out, int64_t os, int64_t row_begin, int64_t row_end) {                            \
        (void)unused;                                                                                         \
        const size_t group = (size_t)(n / 32) * (block);                                                      \
        const uint8_t *x = (const uint8_t *)xq;                                                               \
        if (nbatch == 1) {                                                                                    \
            const int64_t groups = (row_end - row_begin) / 8, part = (groups + 3) / 4;                        \
            for (int64_t g = 0; g < part; g++) {                                                              \
                const uint8_t *G[4];                                                                          \
                float *o[4];                                                                                  \
                int live = 0;                                                                                 \
                for (int j = 0; j < 4 && g + j * part < groups; j++, live++) {                                \
                    const int64_t r = row_begin + 8 * (g + j * part);                                         \
                    G[live] = (const uint8_t *)P + (size_t)(r / 8) * group;                                   \
                    o[live] = out + r;                                                                        \
                }                                                                                             \
                if (live == 4) multi(4, G, n, x, o);                                                          \
                else if (live == 3) multi(3, G, n, x, o);                                                     \
                else if (live == 2) multi(2, G, n, x, o);                                                     \
                else multi(1, G, n, x, o);                                                                    \
            }                                                                                                 \
            return;                                                                                           \
        }                                                                                                     \
        for (int64_t r = row_begin; r + 8 <= row_end; r += 8) {                                               \
            const uint8_t *G = (const uint8_t *)P + (size_t)(r / 8) * group;                                  \
            for (int64_t b0 = 0; b0 < nbatch; b0 += LK_Q4_0X8_COLS) {                                         \
                const int cols = nbatch - b0 >= LK_Q4_0X8_COLS ? LK_Q4_0X8_COLS : (int)(nbatch - b0);         \
                if (cols == 1) rowsp(1, G, n, x + (size_t)b0 * xs, xs, out + b0 * os + r, os);                \
                else rowsp(cols, G, n, x + (size_t)b0 * xs, xs, out + b0 * os + r, os);                       \
            }                                                                                                 \
        }                                                                                                     \
    }

LK_X8P_MATMUL(matmul_q4_0_x8_avx2, 144, lk_q4_0x8p_rows, lk_q4_0x8p_multi)

// One row times one activation row, in the order of lk_q4_0x8_rows' lanes.
LK_INLINE float lk_q4_0_row1(const uint8_t *W, int64_t n, const uint8_t *xq) {
    const int64_t nb = n / 32;
    const int32_t *corr = (const int32_t *)(xq + lk_q8_act_corr4_offset(n));
    const __m256i m4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
    float acc = 0;
    for (int64_t i = 0; i < nb; i++) {
        const lk_block_q4_0 *x = (const lk_block_q4_0 *)W + i;
        const lk_block_q8_0 *y = (const lk_block_q8_0 *)xq + i;
        __m128i q = _mm_loadu_si128((const __m128i *)x->qs);
        __m256i u = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), m4);
        __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(u, _mm256_loadu_si256((const __m256i *)y->qs)), ones);
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
        int32_t dot = _mm_cvtsi128_si32(s) + corr[lk_q8_act_at(i)];
        acc = fmaf((float)dot, lk_h2f(x->d) * lk_h2f(y->d), acc);
    }
    return acc;
}

// MARK: - Q8_0: eight weight rows at a time, one row per lane
//
// The same walk for signed 8-bit weights: a block of eight rows is transposed (eight 32-bit
// words of each row's 32 bytes), their magnitudes taken once, and each register meets the
// broadcast activation quants with their signs moved over (maddubs needs one unsigned side).
// A product pair can reach 2 * 128 * 127, so each maddubs is widened to 32 bits before the
// eight are summed. Exact integer dots, then one FMA per block, as for Q4_0.

// Block i of rows W, W + ws, ..., W + 7 ws: weight words w (lane j: row j) and the block scales.
LK_INLINE void lk_q8_0x8_unpack(const uint8_t *W, size_t ws, int64_t i, __m256i w[8], __m256 *d) {
    const lk_block_q8_0 *x0 = (const lk_block_q8_0 *)W + i;
#define LK_ROW(j) ((const lk_block_q8_0 *)((const uint8_t *)x0 + (size_t)(j) * ws))
#define LK_PAIR(j, h) _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(LK_ROW(j)->qs + 16 * (h)))), \
                                              _mm_loadu_si128((const __m128i *)(LK_ROW((j) + 4)->qs + 16 * (h))), 1)
    for (int h = 0; h < 2; h++) {
        const __m256i y0 = LK_PAIR(0, h), y1 = LK_PAIR(1, h), y2 = LK_PAIR(2, h), y3 = LK_PAIR(3, h);
        const __m256i a = _mm256_unpacklo_epi32(y0, y1), b = _mm256_unpacklo_epi32(y2, y3);
        const __m256i c = _mm256_unpackhi_epi32(y0, y1), e = _mm256_unpackhi_epi32(y2, y3);
        w[4 * h + 0] = _mm256_unpacklo_epi64(a, b);
        w[4 * h + 1] = _mm256_unpackhi_epi64(a, b);
        w[4 * h + 2] = _mm256_unpacklo_epi64(c, e);
        w[4 * h + 3] = _mm256_unpackhi_epi64(c, e);
    }
    const __m128i hd = _mm_setr_epi16((short)LK_ROW(0)->d, (short)LK_ROW(1)->d, (short)LK_ROW(2)->d, (short)LK_ROW(3)->d,
                                      (short)LK_ROW(4)->d, (short)LK_ROW(5)->d, (short)LK_ROW(6)->d, (short)LK_ROW(7)->d);
    *d = _mm256_cvtph_ps(hd);
#undef LK_PAIR
#undef LK_ROW
}

// Adds block i of eight rows (weight words w, scales dw) times activation rows 0..nrows-1.
LK_INLINE void lk_q8_0x8_accumulate(int nrows, const __m256i w[8], __m256 dw, int64_t i, const uint8_t *xq, size_t xs,
                                    const float *scales, __m256i ones, __m256 *acc) {
    __m256i m[8];
    for (int k = 0; k < 8; k++) m[k] = _mm256_sign_epi8(w[k], w[k]);
    for (int b = 0; b < nrows; b++) {
        const lk_block_q8_0 *y = (const lk_block_q8_0 *)(xq + (size_t)b * xs) + i;
        __m256i dot = _mm256_setzero_si256();
        for (int k = 0; k < 8; k++) {
            __m256i a = _mm256_sign_epi8(_mm256_set1_epi32(lk_load_i32(y->qs + 4 * k)), w[k]);
            dot = _mm256_add_epi32(dot, _mm256_madd_epi16(_mm256_maddubs_epi16(m[k], a), ones));
        }
        const float da = *(const float *)((const uint8_t *)(scales + lk_q8_act_at(i)) + (size_t)b * xs);
        acc[b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(dw, _mm256_set1_ps(da)), acc[b]);
    }
}

// Rows r..r+7 times activation rows 0..nrows-1: from the original rows W (ws bytes apart),
// transposed on the fly, or (`packed`, a constant at each use) from a group repacked by
// lk_x8_pack at W, where a block of eight rows is eight plain loads and one conversion.
LK_INLINE void lk_q8_0x8_walk(int nrows, const int packed, const uint8_t *W, size_t ws, int64_t n, const uint8_t *xq,
                              size_t xs, float *out, int64_t os) {
    const int64_t nb = n / 32;
    const __m256i ones = _mm256_set1_epi16(1);
    const float *scales = (const float *)(xq + lk_q8_act_scales_offset(n));
    __m256 acc[LK_Q4_0X8_COLS];
    for (int b = 0; b < nrows; b++) acc[b] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        __m256i w[8];
        __m256 dw;
        if (packed) {
            const uint8_t *p = W + (size_t)i * 272;
            dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
            for (int k = 0; k < 8; k++) w[k] = _mm256_loadu_si256((const __m256i *)(p + 16 + 32 * k));
        } else {
            lk_q8_0x8_unpack(W, ws, i, w, &dw);
        }
        lk_q8_0x8_accumulate(nrows, w, dw, i, xq, xs, scales, ones, acc);
    }
    for (int b = 0; b < nrows; b++) _mm256_storeu_ps(out + b * os, acc[b]);
}

LK_INLINE void lk_q8_0x8_rows(int nrows, const uint8_t *W, size_t ws, int64_t n, const uint8_t *xq, size_t xs,
                              float *out, int64_t os) {
    lk_q8_0x8_walk(nrows, 0, W, ws, n, xq, xs, out, os);
}

LK_INLINE void lk_q8_0x8p_rows(int nrows, const uint8_t *G, int64_t n, const uint8_t *xq, size_t xs,
                               float *out, int64_t os) {
    lk_q8_0x8_walk(nrows, 1, G, 0, n, xq, xs, out, os);
}

// One activation row times m <= 4 groups of eight repacked Q8_0 rows, walked side by side as
// lk_q4_0x8p_multi does: the same integer dots, scale products and FMA per block.
LK_INLINE void lk_q8_0x8p_multi(const int m, const uint8_t *const *G, int64_t n, const uint8_t *xq, float *const *outs) {
    const int64_t nb = n / 32;
    const __m256i ones = _mm256_set1_epi16(1);
    const float *scales = (const float *)(xq + lk_q8_act_scales_offset(n));
    __m256 acc[4];
    for (int j = 0; j < m; j++) acc[j] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const lk_block_q8_0 *y = (const lk_block_q8_0 *)xq + i;
        const __m256 da = _mm256_set1_ps(scales[lk_q8_act_at(i)]);
        __m256i s[4];
        for (int j = 0; j < m; j++) s[j] = _mm256_setzero_si256();
        for (int k = 0; k < 8; k++) {
            const __m256i a = _mm256_set1_epi32(lk_load_i32(y->qs + 4 * k));
            for (int j = 0; j < m; j++) {
                const __m256i w = _mm256_loadu_si256((const __m256i *)(G[j] + (size_t)i * 272 + 16 + 32 * k));
                const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
                s[j] = _mm256_add_epi32(s[j], _mm256_madd_epi16(p, ones));
            }
        }
        for (int j = 0; j < m; j++) {
            const __m256 d = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(G[j] + (size_t)i * 272))), da);
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[j]), d, acc[j]);
        }
    }
    for (int j = 0; j < m; j++) _mm256_storeu_ps(outs[j], acc[j]);
}

LK_X8P_MATMUL(matmul_q8_0_x8_avx2, 272, lk_q8_0x8p_rows, lk_q8_0x8p_multi)

// One row times one activation row, in the order of lk_q8_0x8_rows' lanes.
LK_INLINE float lk_q8_0_row1(const uint8_t *W, int64_t n, const uint8_t *xq) {
    const int64_t nb = n / 32;
    float acc = 0;
    for (int64_t i = 0; i < nb; i++) {
        const lk_block_q8_0 *x = (const lk_block_q8_0 *)W + i;
        const lk_block_q8_0 *y = (const lk_block_q8_0 *)xq + i;
        __m256i p = lk_dot_s8(_mm256_loadu_si256((const __m256i *)x->qs), _mm256_loadu_si256((const __m256i *)y->qs));
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
        acc = fmaf((float)_mm_cvtsi128_si32(s), lk_h2f(x->d) * lk_h2f(y->d), acc);
    }
    return acc;
}

// Eight rows at a time by `rows8` (up to LK_Q4_0X8_COLS activation rows per unpacking), the
// rest one at a time by `row1`.
#define LK_X8_MATMUL(name, rows8, row1)                                                                      \
    static void name(const void *W, size_t ws, int64_t n, const void *xq, size_t xs, int64_t nbatch,         \
                     float *out, int64_t os, int64_t row_begin, int64_t row_end) {                           \
        const uint8_t *w = (const uint8_t *)W;                                                               \
        const uint8_t *x = (const uint8_t *)xq;                                                              \
        int64_t r = row_begin;                                                                               \
        for (; r + 8 <= row_end; r += 8) {                                                                   \
            for (int64_t b0 = 0; b0 < nbatch; b0 += LK_Q4_0X8_COLS) {                                        \
                const int cols = nbatch - b0 >= LK_Q4_0X8_COLS ? LK_Q4_0X8_COLS : (int)(nbatch - b0);        \
                const uint8_t *wr = w + (size_t)r * ws, *xb = x + (size_t)b0 * xs;                           \
                if (cols == 1) rows8(1, wr, ws, n, xb, xs, out + b0 * os + r, os); /* decode: in registers */ \
                else rows8(cols, wr, ws, n, xb, xs, out + b0 * os + r, os);                                  \
            }                                                                                                \
        }                                                                                                    \
        for (; r < row_end; r++)                                                                             \
            for (int64_t b = 0; b < nbatch; b++) out[b * os + r] = row1(w + (size_t)r * ws, n, x + (size_t)b * xs); \
    }

LK_X8_MATMUL(matmul_q4_0_avx2, lk_q4_0x8_rows, lk_q4_0_row1)
LK_X8_MATMUL(matmul_q8_0_avx2, lk_q8_0x8_rows, lk_q8_0_row1)


// MARK: - Q4_K and Q6_K

LK_INLINE void lk_q4_K_scales(const lk_block_q4_K *x, uint8_t out[16]) {
    uint32_t s[4];
    memcpy(s, x->scales, 12);
    s[3] = ((s[2] >> 4) & 0x0f0f0f0f) | (((s[1] >> 6) & 0x03030303) << 4);
    uint32_t mins_low = s[1] & 0x3f3f3f3f;
    s[1] = (s[2] & 0x0f0f0f0f) | (((s[0] >> 6) & 0x03030303) << 4);
    s[2] = mins_low;
    s[0] &= 0x3f3f3f3f;
    memcpy(out, s, 16);  // scales 0..7, mins 0..7
}

LK_INLINE void lk_q4_K_rows(int RM, int RN, const uint8_t *W, size_t ws, int64_t n,
                            const uint8_t *xq, size_t xs, float *out, int64_t os) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m256 acc[4][4];
    for (int r = 0; r < RM; r++)
        for (int b = 0; b < RN; b++) acc[r][b] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / 256; i++) {
        for (int r = 0; r < RM; r++) {
            const lk_block_q4_K *x = (const lk_block_q4_K *)(W + (size_t)r * ws) + i;
            uint8_t sm[16];
            lk_q4_K_scales(x, sm);
            __m256i mins = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)sm),
                _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15)));
            float d = lk_h2f(x->d), dmin = lk_h2f(x->dmin);
            __m256i dots[4];
            for (int b = 0; b < RN; b++) dots[b] = _mm256_setzero_si256();
            for (int c = 0; c < 4; c++) {
                __m256i q = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * c));
                __m256i lo = _mm256_and_si256(q, m4);
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                __m256i s0 = _mm256_set1_epi16(sm[2 * c]), s1 = _mm256_set1_epi16(sm[2 * c + 1]);
                for (int b = 0; b < RN; b++) {
                    const int8_t *a = ((const lk_block_q8_K *)(xq + (size_t)b * xs) + i)->qs + 64 * c;
                    __m256i p0 = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)a));
                    __m256i p1 = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(a + 32)));
                    dots[b] = _mm256_add_epi32(dots[b], _mm256_add_epi32(_mm256_madd_epi16(p0, s0), _mm256_madd_epi16(p1, s1)));
                }
            }
            for (int b = 0; b < RN; b++) {
                const lk_block_q8_K *y = (const lk_block_q8_K *)(xq + (size_t)b * xs) + i;
                __m256i m = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)y->bsums), mins);
                acc[r][b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots[b]), _mm256_set1_ps(d * y->d), acc[r][b]);
                acc[r][b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(m), _mm256_set1_ps(-dmin * y->d), acc[r][b]);
            }
        }
    }
    for (int b = 0; b < RN; b++)
        for (int r = 0; r < RM; r++) out[b * os + r] = lk_hsum256(acc[r][b]);
}

LK_INLINE void lk_q6_K_rows(int RM, int RN, const uint8_t *W, size_t ws, int64_t n,
                            const uint8_t *xq, size_t xs, float *out, int64_t os) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    const __m256i m2 = _mm256_set1_epi8(0x03);
    __m256 acc[4][4];
    for (int r = 0; r < RM; r++)
        for (int b = 0; b < RN; b++) acc[r][b] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / 256; i++) {
        for (int r = 0; r < RM; r++) {
            const lk_block_q6_K *x = (const lk_block_q6_K *)(W + (size_t)r * ws) + i;
            __m256i scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x->scales));
            __m256i dots[4];
            for (int b = 0; b < RN; b++) {
                const lk_block_q8_K *y = (const lk_block_q8_K *)(xq + (size_t)b * xs) + i;
                // Quants are stored as q + 32: start from -32 * sum_j scale_j * groupsum_j.
                __m256i corr = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)y->bsums), scales16);
                dots[b] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(corr, 5));
            }
            for (int h = 0; h < 2; h++) {
                __m256i ql0 = _mm256_loadu_si256((const __m256i *)(x->ql + 64 * h));
                __m256i ql1 = _mm256_loadu_si256((const __m256i *)(x->ql + 64 * h + 32));
                __m256i qh = _mm256_loadu_si256((const __m256i *)(x->qh + 32 * h));
                __m256i q[4];
                q[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4));
                q[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4),
                                       _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4));
                q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                                       _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4));
                q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                       _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4));
                for (int k = 0; k < 4; k++) {
                    int j = 8 * h + 2 * k;  // first sub-block of these 32 elements
                    __m256i s = _mm256_set_m128i(_mm_set1_epi16(x->scales[j + 1]), _mm_set1_epi16(x->scales[j]));
                    for (int b = 0; b < RN; b++) {
                        const int8_t *a = ((const lk_block_q8_K *)(xq + (size_t)b * xs) + i)->qs + 128 * h + 32 * k;
                        __m256i p = _mm256_maddubs_epi16(q[k], _mm256_loadu_si256((const __m256i *)a));
                        dots[b] = _mm256_add_epi32(dots[b], _mm256_madd_epi16(p, s));
                    }
                }
            }
            float d = lk_h2f(x->d);
            for (int b = 0; b < RN; b++) {
                const lk_block_q8_K *y = (const lk_block_q8_K *)(xq + (size_t)b * xs) + i;
                acc[r][b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots[b]), _mm256_set1_ps(d * y->d), acc[r][b]);
            }
        }
    }
    for (int b = 0; b < RN; b++)
        for (int r = 0; r < RM; r++) out[b * os + r] = lk_hsum256(acc[r][b]);
}

// MARK: - Float weights

LK_INLINE __m256 lk_load8_f32(const void *p, int64_t i) { return _mm256_loadu_ps((const float *)p + i); }
LK_INLINE __m256 lk_load8_f16(const void *p, int64_t i) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)));
}
LK_INLINE __m256 lk_load8_bf16(const void *p, int64_t i) {
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
LK_INLINE float lk_scalar_f32(const void *p, int64_t i) { return ((const float *)p)[i]; }
LK_INLINE float lk_scalar_f16(const void *p, int64_t i) { return lk_half_to_float(((const uint16_t *)p)[i]); }
LK_INLINE float lk_scalar_bf16(const void *p, int64_t i) { return lk_bf16_to_float(((const uint16_t *)p)[i]); }

#define LK_FLOAT_ROWS(name, load, scalar)                                                            \
    LK_INLINE void name(int RM, int RN, const uint8_t *W, size_t ws, int64_t n,                      \
                        const uint8_t *xq, size_t xs, float *out, int64_t os) {                      \
        __m256 acc[4][4];                                                                            \
        for (int r = 0; r < RM; r++)                                                                 \
            for (int b = 0; b < RN; b++) acc[r][b] = _mm256_setzero_ps();                            \
        int64_t i = 0;                                                                               \
        for (; i + 8 <= n; i += 8) {                                                                 \
            __m256 x[4];                                                                             \
            for (int b = 0; b < RN; b++) x[b] = lk_load8_f32(xq + (size_t)b * xs, i);                \
            for (int r = 0; r < RM; r++) {                                                           \
                __m256 w = load(W + (size_t)r * ws, i);                                              \
                for (int b = 0; b < RN; b++) acc[r][b] = _mm256_fmadd_ps(w, x[b], acc[r][b]);        \
            }                                                                                        \
        }                                                                                            \
        for (int b = 0; b < RN; b++)                                                                 \
            for (int r = 0; r < RM; r++) {                                                           \
                float s = lk_hsum256(acc[r][b]);                                                     \
                for (int64_t k = i; k < n; k++)                                                      \
                    s += scalar(W + (size_t)r * ws, k) * ((const float *)(xq + (size_t)b * xs))[k];  \
                out[b * os + r] = s;                                                                 \
            }                                                                                        \
    }

LK_FLOAT_ROWS(lk_f32_rows, lk_load8_f32, lk_scalar_f32)
LK_FLOAT_ROWS(lk_f16_rows, lk_load8_f16, lk_scalar_f16)
LK_FLOAT_ROWS(lk_bf16_rows, lk_load8_bf16, lk_scalar_bf16)

// MARK: - Products

// Batches of up to four activation rows: four weight rows at a time for a
// single activation row, two otherwise.
#define LK_MATMUL(name, rows_fn)                                                                         \
    static void name(const void *W, size_t ws, int64_t n, const void *xq, size_t xs, int64_t nbatch,     \
                     float *out, int64_t os, int64_t row_begin, int64_t row_end) {                       \
        const uint8_t *w = (const uint8_t *)W;                                                           \
        const uint8_t *x = (const uint8_t *)xq;                                                          \
        for (int64_t b0 = 0; b0 < nbatch; b0 += 4) {                                                     \
            int cols = nbatch - b0 >= 4 ? 4 : (int)(nbatch - b0);                                        \
            const uint8_t *xb = x + (size_t)b0 * xs;                                                     \
            float *ob = out + b0 * os;                                                                   \
            int64_t r = row_begin;                                                                       \
            if (cols == 1) {                                                                             \
                for (; r + 4 <= row_end; r += 4) rows_fn(4, 1, w + (size_t)r * ws, ws, n, xb, xs, ob + r, os); \
            } else {                                                                                     \
                for (; r + 2 <= row_end; r += 2) {                                                       \
                    switch (cols) {                                                                      \
                    case 4: rows_fn(2, 4, w + (size_t)r * ws, ws, n, xb, xs, ob + r, os); break;         \
                    case 3: rows_fn(2, 3, w + (size_t)r * ws, ws, n, xb, xs, ob + r, os); break;         \
                    default: rows_fn(2, 2, w + (size_t)r * ws, ws, n, xb, xs, ob + r, os); break;        \
                    }                                                                                    \
                }                                                                                        \
            }                                                                                            \
            for (; r < row_end; r++) {                                                                   \
                switch (cols) {                                                                          \
                case 4: rows_fn(1, 4, w + (size_t)r * ws, ws, n, xb, xs, ob + r, os); break;             \
                case 3: rows_fn(1, 3, w + (size_t)r * ws, ws, n, xb, xs, ob + r, os); break;             \
                case 2: rows_fn(1, 2, w + (size_t)r * ws, ws, n, xb, xs, ob + r, os); break;             \
                default: rows_fn(1, 1, w + (size_t)r * ws, ws, n, xb, xs, ob + r, os); break;            \
                }                                                                                        \
            }                                                                                            \
        }                                                                                                \
    }

LK_MATMUL(matmul_q4_K_avx2, lk_q4_K_rows)
LK_MATMUL(matmul_q6_K_avx2, lk_q6_K_rows)
LK_MATMUL(matmul_f32_avx2, lk_f32_rows)
LK_MATMUL(matmul_f16_avx2, lk_f16_rows)
LK_MATMUL(matmul_bf16_avx2, lk_bf16_rows)

// MARK: - Vector helpers

static float dot_f32_avx2(const float *a, const float *b, int64_t n) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    }
    for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    float s = lk_hsum256(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static void axpy_f32_avx2(int64_t n, float a, const float *x, float *y) {
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

static float dot_f16_f32_avx2(const uint16_t *a, const float *b, int64_t n) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(lk_load8_f16(a, i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(lk_load8_f16(a, i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    }
    for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(lk_load8_f16(a, i), _mm256_loadu_ps(b + i), acc0);
    float s = lk_hsum256(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++) s += lk_h2f(a[i]) * b[i];
    return s;
}

static void axpy_f16_avx2(int64_t n, float a, const uint16_t *x, float *y) {
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, lk_load8_f16(x, i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * lk_h2f(x[i]);
}

static void f16_to_f32_avx2(const uint16_t *src, float *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, lk_load8_f16(src, i));
    for (; i < n; i++) dst[i] = lk_h2f(src[i]);
}

static void f32_to_f16_avx2(const float *src, uint16_t *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm_storeu_si128((__m128i *)(dst + i), h);
    }
    for (; i < n; i++) dst[i] = (uint16_t)_cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

// MARK: - Attention
//
// As attention_avx512 (see its notes in avx512.c): positions in blocks of eight, every head
// of the call visiting a block before the next, one head's dot products and weighted values
// without a call per cached row. The same operations in the same order as dot_f32_avx2 /
// dot_f16_f32_avx2 (two accumulators taking alternate slices of eight) and axpy_f32_avx2 /
// axpy_f16_avx2 (one FMA per slice, rows in position order), so results are bitwise those of
// the generic loop. An output is kept in registers eight slices at a time over a block, in
// memory between blocks.

#define LK_ATTENTION_BLOCK 8

// Slice j (8 elements) of a cached row of floats or of halves.
LK_INLINE __m256 lk_kv8(int half, const void *row, int64_t j) {
    return half ? lk_load8_f16(row, 8 * j) : lk_load8_f32(row, 8 * j);
}

// Slices j0..j0+M-1 of one head's output, over positions p0..p1-1 of a block.
LK_INLINE void lk_attention_values(const int M, int half, const char *vh, size_t row_bytes, const float *s,
                                   int64_t p0, int64_t p1, int64_t j0, float *oh) {
    __m256 r[8];
    for (int j = 0; j < M; j++) r[j] = p0 == 0 ? _mm256_setzero_ps() : _mm256_loadu_ps(oh + 8 * (j0 + j));
    for (int64_t p = p0; p < p1; p++) {
        const char *vp = vh + (size_t)p * row_bytes;
        const __m256 w = _mm256_set1_ps(s[p]);
        for (int j = 0; j < M; j++) r[j] = _mm256_fmadd_ps(w, lk_kv8(half, vp, j0 + j), r[j]);
    }
    for (int j = 0; j < M; j++) _mm256_storeu_ps(oh + 8 * (j0 + j), r[j]);
}

LK_INLINE void lk_attention_any(int half, const float *q, int64_t q_stride, int64_t nkv, int64_t group,
                                const void *k, const void *v, int64_t kv_stride, int64_t head_dim, int64_t npos,
                                float scale, float *scores, float *out, int64_t out_stride) {
    const size_t elem = half ? sizeof(uint16_t) : sizeof(float);
    const size_t row_bytes = (size_t)kv_stride * elem, head_bytes = (size_t)head_dim * elem;
    const int64_t nq = nkv * group, nv = head_dim / 8;  // head_dim % 32 == 0: nv % 4 == 0
    for (int64_t p0 = 0; p0 < npos; p0 += LK_ATTENTION_BLOCK) {
        const int64_t p1 = npos - p0 < LK_ATTENTION_BLOCK ? npos : p0 + LK_ATTENTION_BLOCK;
        for (int64_t h = 0; h < nq; h++) {
            const float *qh = q + h * q_stride;
            const char *kh = (const char *)k + (size_t)(h / group) * head_bytes;
            float *sh = scores + h * npos;
            for (int64_t p = p0; p < p1; p++) {
                const char *kp = kh + (size_t)p * row_bytes;
                __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
                for (int64_t j = 0; j < nv; j += 2) {
                    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(qh + 8 * j), lk_kv8(half, kp, j), acc0);
                    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(qh + 8 * j + 8), lk_kv8(half, kp, j + 1), acc1);
                }
                sh[p] = lk_hsum256(_mm256_add_ps(acc0, acc1)) * scale;
            }
        }
    }
    for (int64_t h = 0; h < nq; h++) lk_softmax(scores + h * npos, npos);
    for (int64_t p0 = 0; p0 < npos; p0 += LK_ATTENTION_BLOCK) {
        const int64_t p1 = npos - p0 < LK_ATTENTION_BLOCK ? npos : p0 + LK_ATTENTION_BLOCK;
        for (int64_t h = 0; h < nq; h++) {
            const char *vh = (const char *)v + (size_t)(h / group) * head_bytes;
            const float *sh = scores + h * npos;
            float *oh = out + h * out_stride;
            int64_t j0 = 0;
            for (; j0 + 8 <= nv; j0 += 8) lk_attention_values(8, half, vh, row_bytes, sh, p0, p1, j0, oh);
            if (j0 < nv) lk_attention_values(4, half, vh, row_bytes, sh, p0, p1, j0, oh);
        }
    }
}

static void attention_avx2(const float *q, int64_t q_stride, int64_t nkv, int64_t group, const float *k,
                           const float *v, int64_t kv_stride, int64_t head_dim, int64_t npos, float scale,
                           float *scores, float *out, int64_t out_stride) {
    lk_attention_any(0, q, q_stride, nkv, group, k, v, kv_stride, head_dim, npos, scale, scores, out, out_stride);
}

static void attention_f16_avx2(const float *q, int64_t q_stride, int64_t nkv, int64_t group, const uint16_t *k,
                               const uint16_t *v, int64_t kv_stride, int64_t head_dim, int64_t npos, float scale,
                               float *scores, float *out, int64_t out_stride) {
    lk_attention_any(1, q, q_stride, nkv, group, k, v, kv_stride, head_dim, npos, scale, scores, out, out_stride);
}

#pragma clang attribute pop

const lk_impl lk_impl_avx2 = {
    .matmul_f32 = matmul_f32_avx2,
    .matmul_f16 = matmul_f16_avx2,
    .matmul_bf16 = matmul_bf16_avx2,
    .matmul_q4_0 = matmul_q4_0_avx2,
    .matmul_q8_0 = matmul_q8_0_avx2,
    .matmul_q4_K = matmul_q4_K_avx2,
    .matmul_q6_K = matmul_q6_K_avx2,
    .matmul_q4_0_x8 = matmul_q4_0_x8_avx2,
    .matmul_q8_0_x8 = matmul_q8_0_x8_avx2,
    .dot_f32 = dot_f32_avx2,
    .axpy_f32 = axpy_f32_avx2,
    .dot_f16_f32 = dot_f16_f32_avx2,
    .axpy_f16 = axpy_f16_avx2,
    .f16_to_f32 = f16_to_f32_avx2,
    .f32_to_f16 = f32_to_f16_avx2,
    .attention = attention_avx2,
    .attention_f16 = attention_f16_avx2,
};

#endif

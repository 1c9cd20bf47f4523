// AVX-512 implementation (F, BW, VL, DQ, VNNI; 512-bit vectors).

#include "internal.h"

#if defined(__x86_64__)

#include <immintrin.h>

#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c,bmi2"))), apply_to = function)

#define LK_INLINE static inline __attribute__((always_inline))

// MARK: - Helpers

LK_INLINE float lk_h2f(uint16_t h) { return _cvtsh_ss(h); }

// Sum of the 16 lanes in a fixed order (halves, then quarters, then pairs), so
// that every kernel reduces its accumulators identically.
LK_INLINE float lk_hsum512(__m512 v) {
    __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    return _mm_cvtss_f32(s4);
}

// MARK: - Batch invariance
//
// Every output element is computed with the same arithmetic whatever the batch
// size, the row range or the kernel (row kernel or panel kernel), so results are
// bitwise independent of how requests are batched or rows split among threads:
//
//   - each weight type has one lane layout: a fixed set of elements feeds the
//     integer (or, for float weights, FMA) accumulation of each of 16 lanes;
//   - integer dot products per block are exact, so only which elements meet in
//     a lane matters, not the instruction sequence;
//   - per block, the lane integers are converted to float and added into a
//     float lane accumulator with the same FMAs and the same scale products
//     (Q4_0 and Q8_0: each block's integers are first summed exactly into one
//     lane, see below);
//   - a row is processed in chunks (LK_Q8_CHUNK_GROUPS groups of four Q8_0
//     blocks, LK_K_CHUNK super-blocks, LK_F_CHUNK float elements); each chunk's
//     lane accumulators start at zero and are reduced with lk_hsum512, and the
//     chunk sums are added in order, starting from the first.

#define LK_Q8_CHUNK_GROUPS 16  // 2048 elements (a panel of 4 rows, 9 KiB, stays in L1 with its activations)
#define LK_K_CHUNK 16          // super-blocks, 4096 elements
#define LK_F_CHUNK 1024        // float elements

// Adds a chunk's reduced accumulators into the running sums (the first chunk
// sets them).
#define LK_ADD_CHUNK(RM, RN, acc, sums, first)                                   \
    for (int b_ = 0; b_ < (RN); b_++)                                            \
        for (int r_ = 0; r_ < (RM); r_++) {                                      \
            float v_ = lk_hsum512((acc)[r_][b_]);                                \
            (sums)[r_][b_] = (first) ? v_ : (sums)[r_][b_] + v_;                  \
        }

// MARK: - Q4_0 and Q8_0
//
// Weights are taken as unsigned bytes (Q4_0 nibbles as stored, Q8_0 quants plus
// 128) and activations as signed bytes, read straight from memory by the dot
// products. A row is walked in superblocks of 16 blocks (512 elements), held
// interleaved in eight registers: 32-bit lane j of register k holds elements
// 4k..4k+3 (k < 4) or 16+4(k-4)..16+4(k-4)+3 (k >= 4) of block B(j), where
// lane 4i + g belongs to block B = 4g + i of the superblock (the order in which
// four groups of four blocks transpose). Eight VNNI dot products then leave each
// block's exact integer dot product in its own lane, with no horizontal sums.
// The activation row supplies, in the same order, the quants, each block's
// correction for the weights' offset (-8 or -128 times the block's quant sum)
// and its scale, so a block costs one conversion, one scale product and one FMA
// whatever the batch: the row kernel (up to LK_MULTI_NB activation rows) and the
// panel kernel (more rows) add the same products into the same lanes in the
// same order.

#define LK_CHUNK_SB (LK_Q8_CHUNK_GROUPS / 4)  // superblocks per chunk

/// Activation row pointers for Q8_0 activations (layout in internal.h).
typedef struct {
    const int8_t *quants;   // interleaved copy, 512 bytes per superblock
    const float *scales;    // 16 per superblock
    const int32_t *corr;    // 16 per superblock, for the weight type
} lk_q8_act;

LK_INLINE lk_q8_act lk_q8_act_at(int type, const void *row, int64_t n) {
    const uint8_t *base = (const uint8_t *)row;
    lk_q8_act a;
    a.quants = (const int8_t *)(base + lk_q8_act_aux_offset(n));
    a.scales = (const float *)(base + lk_q8_act_scales_offset(n));
    a.corr = (const int32_t *)(base + (type == LK_TYPE_Q4_0 ? lk_q8_act_corr4_offset(n) : lk_q8_act_corr8_offset(n)));
    return a;
}

/// One superblock of one weight row, unpacked: unsigned quants in the
/// interleaved order and the 16 block scales. Blocks past the row's end are zero.
typedef struct {
    __m512i q[8];
    __m512 dw;
} lk_sb_weights;

// Four registers each holding 32-bit words 0..3 of four blocks (block i of
// register g in 128-bit lane i) become four registers k = 0..3 holding word k of
// all 16 blocks, block 4g + i in lane 4i + g.
LK_INLINE void lk_transpose_words(__m512i g0, __m512i g1, __m512i g2, __m512i g3, __m512i *out) {
    __m512i t0 = _mm512_unpacklo_epi32(g0, g1), t1 = _mm512_unpackhi_epi32(g0, g1);
    __m512i t2 = _mm512_unpacklo_epi32(g2, g3), t3 = _mm512_unpackhi_epi32(g2, g3);
    out[0] = _mm512_unpacklo_epi64(t0, t2);
    out[1] = _mm512_unpackhi_epi64(t0, t2);
    out[2] = _mm512_unpacklo_epi64(t1, t3);
    out[3] = _mm512_unpackhi_epi64(t1, t3);
}

// Stored bytes of up to four Q4_0 blocks (block i in 128-bit lane i, missing
// ones zero) and their scale halves in the low four words of *d.
LK_INLINE __m512i lk_q4_0_group(const lk_block_q4_0 *x, int count, __m128i *d) {
    __m512i q;
    if (count == 4) {
        q = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)x[0].qs));
        q = _mm512_inserti32x4(q, _mm_loadu_si128((const __m128i *)x[1].qs), 1);
        q = _mm512_inserti32x4(q, _mm_loadu_si128((const __m128i *)x[2].qs), 2);
        q = _mm512_inserti32x4(q, _mm_loadu_si128((const __m128i *)x[3].qs), 3);
        *d = _mm_setr_epi16((short)x[0].d, (short)x[1].d, (short)x[2].d, (short)x[3].d, 0, 0, 0, 0);
    } else {
        uint8_t bytes[64] = {0};
        uint16_t halves[8] = {0};
        for (int i = 0; i < count; i++) {
            memcpy(bytes + 16 * i, x[i].qs, 16);
            halves[i] = x[i].d;
        }
        q = _mm512_loadu_si512(bytes);
        *d = _mm_loadu_si128((const __m128i *)halves);
    }
    return q;
}

// Quants 0..15 (*lo) and 16..31 (*hi) of up to four Q8_0 blocks and their scale halves.
LK_INLINE void lk_q8_0_group(const lk_block_q8_0 *x, int count, __m512i *lo, __m512i *hi, __m128i *d) {
    if (count == 4) {
        __m512i l = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)x[0].qs));
        __m512i h = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(x[0].qs + 16)));
        l = _mm512_inserti32x4(l, _mm_loadu_si128((const __m128i *)x[1].qs), 1);
        h = _mm512_inserti32x4(h, _mm_loadu_si128((const __m128i *)(x[1].qs + 16)), 1);
        l = _mm512_inserti32x4(l, _mm_loadu_si128((const __m128i *)x[2].qs), 2);
        h = _mm512_inserti32x4(h, _mm_loadu_si128((const __m128i *)(x[2].qs + 16)), 2);
        l = _mm512_inserti32x4(l, _mm_loadu_si128((const __m128i *)x[3].qs), 3);
        h = _mm512_inserti32x4(h, _mm_loadu_si128((const __m128i *)(x[3].qs + 16)), 3);
        *lo = l;
        *hi = h;
        *d = _mm_setr_epi16((short)x[0].d, (short)x[1].d, (short)x[2].d, (short)x[3].d, 0, 0, 0, 0);
    } else {
        int8_t bytes[128] = {0};
        uint16_t halves[8] = {0};
        for (int i = 0; i < count; i++) {
            memcpy(bytes + 16 * i, x[i].qs, 16);
            memcpy(bytes + 64 + 16 * i, x[i].qs + 16, 16);
            halves[i] = x[i].d;
        }
        *lo = _mm512_loadu_si512(bytes);
        *hi = _mm512_loadu_si512(bytes + 64);
        *d = _mm_loadu_si128((const __m128i *)halves);
    }
}

// Superblock s of a row with `blocks` blocks present from its start (16 for a
// whole superblock).
LK_INLINE void lk_sb_load(int type, const uint8_t *row, int64_t s, int blocks, lk_sb_weights *w) {
    __m128i d[4];
    __m512i lo[4], hi[4];
    for (int g = 0; g < 4; g++) {
        int count = blocks - 4 * g;
        count = count < 0 ? 0 : count > 4 ? 4 : count;
        if (type == LK_TYPE_Q4_0)
            lo[g] = lk_q4_0_group((const lk_block_q4_0 *)row + 16 * s + 4 * g, count, &d[g]);
        else
            lk_q8_0_group((const lk_block_q8_0 *)row + 16 * s + 4 * g, count, &lo[g], &hi[g], &d[g]);
    }
    if (type == LK_TYPE_Q4_0) {
        const __m512i m4 = _mm512_set1_epi8(0x0f);
        __m512i raw[4];
        lk_transpose_words(lo[0], lo[1], lo[2], lo[3], raw);
        for (int k = 0; k < 4; k++) {
            w->q[k] = _mm512_and_si512(raw[k], m4);
            w->q[4 + k] = _mm512_and_si512(_mm512_srli_epi16(raw[k], 4), m4);
        }
    } else {
        const __m512i bias = _mm512_set1_epi8((char)0x80);
        lk_transpose_words(lo[0], lo[1], lo[2], lo[3], w->q);
        lk_transpose_words(hi[0], hi[1], hi[2], hi[3], w->q + 4);
        for (int k = 0; k < 8; k++) w->q[k] = _mm512_xor_si512(w->q[k], bias);
    }
    __m128i u01 = _mm_unpacklo_epi16(d[0], d[1]), u23 = _mm_unpacklo_epi16(d[2], d[3]);
    w->dw = _mm512_cvtph_ps(_mm256_set_m128i(_mm_unpackhi_epi32(u01, u23), _mm_unpacklo_epi32(u01, u23)));
}

static __attribute__((noinline)) void lk_sb_load_tail(int type, const uint8_t *row, int64_t s, int blocks,
                                                      lk_sb_weights *w) {
    lk_sb_load(type, row, s, blocks, w);
}

// acc + superblock s of weights `w` times activation row `a`.
LK_INLINE __m512 lk_sb_dot(const lk_sb_weights *w, lk_q8_act a, int64_t s, __m512 acc) {
    const int8_t *q = a.quants + 512 * s;
    __m512i t = _mm512_loadu_si512(a.corr + 16 * s);
    for (int k = 0; k < 8; k++) t = _mm512_dpbusd_epi32(t, w->q[k], _mm512_loadu_si512(q + 64 * k));
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(t), _mm512_mul_ps(w->dw, _mm512_loadu_ps(a.scales + 16 * s)), acc);
}

LK_INLINE int lk_q8w_sb_bytes(int type) {
    return 16 * (int)(type == LK_TYPE_Q4_0 ? sizeof(lk_block_q4_0) : sizeof(lk_block_q8_0));
}

// MARK: - Q4_0 and Q8_0: up to a few activation rows, weights from registers

// Software prefetch distances along each weight row streamed by a row kernel
// (a few superblocks ahead); the hardware prefetcher alone falls well short on
// several interleaved row streams.
#define LK_PREFETCH_Q4_0 768
#define LK_PREFETCH_Q8_0 1536
#define LK_PREFETCH_K 1536

// Batches up to this size use the row kernel: each superblock of a weight row is
// unpacked once into registers and used for every activation row (two weight rows
// at a time up to 4 activation rows, one from 5 to 8); larger batches unpack a panel
// of weights once and sweep many activation rows past it. At 8 rows the row kernel
// measured 7-9 % faster than the panel kernel with the weights in cache and 5-10 %
// streaming them from memory on two threads (11008 x 4096 Q4_0): its unpacking (shuffle
// port) and dot products (VNNI port) interleave in one instruction stream, where the
// panel kernel unpacks a panel and then computes.
#define LK_MULTI_NB 8

// Rows [0, RM) (at W, stride ws) times activation rows [0, NB), superblocks
// [s0, s0 + LK_CHUNK_SB) (one chunk): reduced and stored (first chunk) or added.
LK_INLINE void lk_q8w_rows_chunk(int type, int RM, int NB, const uint8_t *W, size_t ws, int64_t nb, int64_t s0,
                                 const lk_q8_act *acts, float *out, int64_t os) {
    const int64_t nsb = (nb + 15) / 16, full = nb / 16;
    const int64_t send = nsb - s0 < LK_CHUNK_SB ? nsb : s0 + LK_CHUNK_SB;
    const int64_t fend = send < full ? send : full;
    const int sb_bytes = lk_q8w_sb_bytes(type);
    const int pf = type == LK_TYPE_Q4_0 ? LK_PREFETCH_Q4_0 : LK_PREFETCH_Q8_0;
    __m512 acc[8];  // acc[r * NB + b]; RM x NB <= 8
    for (int r = 0; r < RM; r++)
        for (int b = 0; b < NB; b++) acc[r * NB + b] = _mm512_setzero_ps();
    for (int64_t s = s0; s < fend; s++) {
        for (int r = 0; r < RM; r++) {
            const uint8_t *row = W + (size_t)r * ws;
            const char *ahead = (const char *)row + (size_t)s * sb_bytes + pf;
            for (int k = 0; k < sb_bytes; k += 64) _mm_prefetch(ahead + k, _MM_HINT_T0);
            lk_sb_weights w;
            lk_sb_load(type, row, s, 16, &w);
#pragma clang loop unroll(full)
            for (int b = 0; b < NB; b++) acc[r * NB + b] = lk_sb_dot(&w, acts[b], s, acc[r * NB + b]);
        }
    }
    if (send > fend) {
        for (int r = 0; r < RM; r++) {
            lk_sb_weights w;
            lk_sb_load_tail(type, W + (size_t)r * ws, full, (int)(nb - 16 * full), &w);
            for (int b = 0; b < NB; b++) acc[r * NB + b] = lk_sb_dot(&w, acts[b], full, acc[r * NB + b]);
        }
    }
    for (int b = 0; b < NB; b++) {
        for (int r = 0; r < RM; r++) {
            float v = lk_hsum512(acc[r * NB + b]);
            float *o = out + b * os + r;
            *o = s0 == 0 ? v : *o + v;
        }
    }
}

// Rows [0, RM) times the `nbatch` (at most LK_MULTI_NB) activation rows, chunk by chunk.
LK_INLINE void lk_q8w_rows(int type, int RM, const uint8_t *W, size_t ws, int64_t n, const lk_q8_act *acts,
                           int64_t nbatch, float *out, int64_t os) {
    const int64_t nb = n / 32;
    const int64_t nsb = (nb + 15) / 16;
    for (int64_t s0 = 0; s0 < nsb; s0 += LK_CHUNK_SB) {
        switch (nbatch) {
        // Five to eight activation rows take one weight row at a time (the caller passes RM 1
        // for them); the literal 1 keeps the RM 2 instantiation from holding 2 x 8 accumulators.
        case 8: lk_q8w_rows_chunk(type, 1, 8, W, ws, nb, s0, acts, out, os); break;
        case 7: lk_q8w_rows_chunk(type, 1, 7, W, ws, nb, s0, acts, out, os); break;
        case 6: lk_q8w_rows_chunk(type, 1, 6, W, ws, nb, s0, acts, out, os); break;
        case 5: lk_q8w_rows_chunk(type, 1, 5, W, ws, nb, s0, acts, out, os); break;
        case 4: lk_q8w_rows_chunk(type, RM, 4, W, ws, nb, s0, acts, out, os); break;
        case 3: lk_q8w_rows_chunk(type, RM, 3, W, ws, nb, s0, acts, out, os); break;
        case 2: lk_q8w_rows_chunk(type, RM, 2, W, ws, nb, s0, acts, out, os); break;
        default: lk_q8w_rows_chunk(type, RM, 1, W, ws, nb, s0, acts, out, os); break;
        }
    }
}

LK_INLINE void lk_q8w_multi(int type, const void *W, size_t ws, int64_t n, const void *xq, size_t xs, int64_t nbatch,
                            float *out, int64_t os, int64_t row_begin, int64_t row_end) {
    const uint8_t *w = (const uint8_t *)W;
    lk_q8_act acts[LK_MULTI_NB];
    for (int64_t b = 0; b < nbatch; b++) acts[b] = lk_q8_act_at(type, (const uint8_t *)xq + (size_t)b * xs, n);
    // Two rows at a time (one from five activation rows): with more, the accumulators
    // and unpacked weights no longer fit in registers.
    int64_t r = row_begin;
    for (; nbatch <= 4 && r + 2 <= row_end; r += 2) lk_q8w_rows(type, 2, w + (size_t)r * ws, ws, n, acts, nbatch, out + r, os);
    for (; r < row_end; r++) lk_q8w_rows(type, 1, w + (size_t)r * ws, ws, n, acts, nbatch, out + r, os);
}

// MARK: - Q4_0 and Q8_0: matrix-matrix with unpacked weight panels

#define LK_GEMM_RM 4
#define LK_GEMM_RN 4

// Fills panel[s * RM + r] for superblocks [s0, s0 + nsb) of rows [r0, r0 + rows);
// rows past `rows` are zero.
static void lk_build_panels(int type, const uint8_t *W, size_t ws, int64_t nb, int64_t r0, int rows,
                            int64_t s0, int64_t nsb, lk_sb_weights *panel) {
    for (int r = 0; r < LK_GEMM_RM; r++) {
        for (int64_t s = 0; s < nsb; s++) {
            lk_sb_weights *p = panel + s * LK_GEMM_RM + r;
            int64_t left = nb - 16 * (s0 + s);
            if (r >= rows) {
                for (int k = 0; k < 8; k++) p->q[k] = _mm512_setzero_si512();
                p->dw = _mm512_setzero_ps();
            } else if (left >= 16) {
                lk_sb_load(type, W + (size_t)(r0 + r) * ws, s0 + s, 16, p);
            } else {
                lk_sb_load_tail(type, W + (size_t)(r0 + r) * ws, s0 + s, (int)left, p);
            }
        }
    }
}

// The next panel's weights (superblock s of its row r at base + r * ws + s *
// sb_bytes), prefetched while a tile computes so that building it does not wait
// on memory. Into L2 (hint T2): the L1 has too few line-fill buffers for a
// panel's worth of misses, and T0 measured 3-9 % slower at batch 8 streaming
// weights from memory.
typedef struct {
    const uint8_t *base;
    size_t ws;
    int rows;
    int64_t sbs;
    int sb_bytes;
} lk_panel_prefetch;

// Rows [0, rows) of the panel over its superblocks [0, nsb) times activation
// rows acts[0..RN), two weight rows at a time (each activation load feeds both),
// their superblocks in order. Within a superblock the eight weight words are the
// outer loop, so the 2 x RN integer sums advance side by side (each dot product
// waits on one issued 2 x RN products earlier, not on the one just before) and
// the weights are read from the panel (L1) as they are needed instead of held
// in registers. Same arithmetic, in the same order, as lk_sb_dot. Measured
// single-threaded at batch 8 with the data in cache: 70 -> 101 GMAC/s.
LK_INLINE void lk_q8_gemm_tile(int RN, const lk_sb_weights *panel, int64_t nsb, int64_t s0,
                               const lk_q8_act *acts, float *out, int64_t out_row_stride, int rows, int accumulate,
                               const lk_panel_prefetch *next) {
    for (int r = 0; r < rows; r += 2) {
        __m512 acc0[LK_GEMM_RN], acc1[LK_GEMM_RN];
#pragma clang loop unroll(full)
        for (int b = 0; b < RN; b++) acc0[b] = acc1[b] = _mm512_setzero_ps();
        for (int64_t s = 0; s < nsb; s++) {
            if (next && s < next->sbs) {
                for (int rr = r; rr < r + 2 && rr < next->rows; rr++) {
                    const char *line = (const char *)next->base + (size_t)rr * next->ws + (size_t)s * next->sb_bytes;
                    for (int k = 0; k < next->sb_bytes + 63; k += 64) _mm_prefetch(line + k, _MM_HINT_T2);
                }
            }
            // Rows past `rows` in the panel are zero: computed, never stored.
            const lk_sb_weights *w0 = panel + s * LK_GEMM_RM + r, *w1 = w0 + 1;
            __m512i t0[LK_GEMM_RN], t1[LK_GEMM_RN];
#pragma clang loop unroll(full)
            for (int b = 0; b < RN; b++) t0[b] = t1[b] = _mm512_loadu_si512(acts[b].corr + 16 * (s0 + s));
#pragma clang loop unroll(full)
            for (int k = 0; k < 8; k++) {
                __m512i q0 = _mm512_load_si512(&w0->q[k]), q1 = _mm512_load_si512(&w1->q[k]);
#pragma clang loop unroll(full)
                for (int b = 0; b < RN; b++) {
                    __m512i a = _mm512_loadu_si512(acts[b].quants + 512 * (s0 + s) + 64 * k);
                    t0[b] = _mm512_dpbusd_epi32(t0[b], q0, a);
                    t1[b] = _mm512_dpbusd_epi32(t1[b], q1, a);
                }
            }
#pragma clang loop unroll(full)
            for (int b = 0; b < RN; b++) {
                __m512 da = _mm512_loadu_ps(acts[b].scales + 16 * (s0 + s));
                acc0[b] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t0[b]), _mm512_mul_ps(w0->dw, da), acc0[b]);
                acc1[b] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t1[b]), _mm512_mul_ps(w1->dw, da), acc1[b]);
            }
        }
        for (int b = 0; b < RN; b++) {
            float v = lk_hsum512(acc0[b]);
            float *o = out + b * out_row_stride + r;
            *o = accumulate ? *o + v : v;
            if (r + 1 < rows) {
                v = lk_hsum512(acc1[b]);
                o[1] = accumulate ? o[1] + v : v;
            }
        }
    }
}

// Activation rows are processed in blocks of about `budget` bytes per panel
// width, so that a block stays in the L2 cache while every row tile reuses it.
LK_INLINE int64_t lk_batch_block(int64_t bytes_per_row, int64_t granule, int64_t budget) {
    int64_t rows = budget / (bytes_per_row > 0 ? bytes_per_row : 1);
    rows = rows / granule * granule;
    return rows < granule ? granule : rows;
}

// One panel (rows [r0, r0 + 4), superblocks [s0, s0 + LK_CHUNK_SB)) times
// activation rows [bb, bend), prefetching the panel that comes next (`next_r0`,
// `next_s0`).
LK_INLINE void lk_q8_gemm_panel(int type, const uint8_t *W, size_t ws, int64_t n, const void *xq, size_t xs,
                                int64_t bb, int64_t bend, float *out, int64_t os, int64_t row_end,
                                int64_t r0, int64_t s0, int64_t next_r0, int64_t next_s0, lk_sb_weights *panel) {
    const int64_t nb = n / 32;
    const int64_t nsb_row = (nb + 15) / 16;
    const int64_t nsb = nsb_row - s0 < LK_CHUNK_SB ? nsb_row - s0 : LK_CHUNK_SB;
    const int rows = row_end - r0 >= LK_GEMM_RM ? LK_GEMM_RM : (int)(row_end - r0);
    lk_build_panels(type, W, ws, nb, r0, rows, s0, nsb, panel);
    lk_panel_prefetch next = {.ws = ws, .sb_bytes = lk_q8w_sb_bytes(type)};
    const lk_panel_prefetch *pf = NULL;
    if (next_r0 < row_end && next_s0 < nsb_row) {
        next.base = W + (size_t)next_r0 * ws + (size_t)next_s0 * next.sb_bytes;
        next.rows = row_end - next_r0 >= LK_GEMM_RM ? LK_GEMM_RM : (int)(row_end - next_r0);
        // Only whole superblocks: the last one of a row may be partial.
        next.sbs = (nb / 16 - next_s0) < LK_CHUNK_SB ? nb / 16 - next_s0 : LK_CHUNK_SB;
        if (next.sbs > 0) pf = &next;
    }
    for (int64_t b0 = bb; b0 < bend; b0 += LK_GEMM_RN) {
        lk_q8_act acts[LK_GEMM_RN];
        int cols = bend - b0 >= LK_GEMM_RN ? LK_GEMM_RN : (int)(bend - b0);
        for (int b = 0; b < cols; b++) acts[b] = lk_q8_act_at(type, (const uint8_t *)xq + (size_t)(b0 + b) * xs, n);
        float *o = out + b0 * os + r0;
        // Prefetch during the first pass over the activation rows only.
        const lk_panel_prefetch *p = b0 == bb ? pf : NULL;
        switch (cols) {
        case 4: lk_q8_gemm_tile(4, panel, nsb, s0, acts, o, os, rows, s0 > 0, p); break;
        case 3: lk_q8_gemm_tile(3, panel, nsb, s0, acts, o, os, rows, s0 > 0, p); break;
        case 2: lk_q8_gemm_tile(2, panel, nsb, s0, acts, o, os, rows, s0 > 0, p); break;
        default: lk_q8_gemm_tile(1, panel, nsb, s0, acts, o, os, rows, s0 > 0, p); break;
        }
    }
}

// From this many activation rows in a block, panels are visited chunk by chunk.
#define LK_GEMM_CHUNK_OUTER_ROWS 32

static void lk_q8_gemm(int type, const void *W, size_t ws, int64_t n, const void *xq, size_t xs, int64_t nbatch,
                       float *out, int64_t os, int64_t row_begin, int64_t row_end) {
    const uint8_t *w = (const uint8_t *)W;
    const int64_t nsb = (n / 32 + 15) / 16;
    _Alignas(64) lk_sb_weights panel[LK_CHUNK_SB * LK_GEMM_RM];
    // 256 KiB of activation quants per block (128 rows of one chunk): measured at
    // width 8192, batch 512, 2 threads: 85 GMAC/s with 1 MiB blocks, 117-125 with 256 KiB.
    const int64_t block = lk_batch_block(LK_CHUNK_SB * 512, LK_GEMM_RN, 1 << 18);
    for (int64_t bb = 0; bb < nbatch; bb += block) {
        const int64_t bend = nbatch - bb < block ? nbatch : bb + block;
        if (bend - bb >= LK_GEMM_CHUNK_OUTER_ROWS) {
            // Many activation rows: a chunk of the block stays in L2 while every row tile of the
            // range streams its weights past it. Each output still adds its chunks in order.
            for (int64_t s0 = 0; s0 < nsb; s0 += LK_CHUNK_SB) {
                for (int64_t r0 = row_begin; r0 < row_end; r0 += LK_GEMM_RM) {
                    int64_t nr0 = r0 + LK_GEMM_RM, ns0 = s0;
                    if (nr0 >= row_end) { nr0 = row_begin; ns0 = s0 + LK_CHUNK_SB; }
                    lk_q8_gemm_panel(type, w, ws, n, xq, xs, bb, bend, out, os, row_end, r0, s0, nr0, ns0, panel);
                }
            }
        } else {
            // A few activation rows (they stay in L1): each row tile's chunks in turn, so that
            // its weights stream in order.
            for (int64_t r0 = row_begin; r0 < row_end; r0 += LK_GEMM_RM) {
                for (int64_t s0 = 0; s0 < nsb; s0 += LK_CHUNK_SB) {
                    int64_t nr0 = r0, ns0 = s0 + LK_CHUNK_SB;
                    if (ns0 >= nsb) { nr0 = r0 + LK_GEMM_RM; ns0 = 0; }
                    lk_q8_gemm_panel(type, w, ws, n, xq, xs, bb, bend, out, os, row_end, r0, s0, nr0, ns0, panel);
                }
            }
        }
    }
}

// Batches up to this size use the matrix-vector kernel per activation row
// (Q4_K, Q6_K and float weights).
#define LK_GEMV_MAX_BATCH 3

static void matmul_q4_0_avx512(const void *W, size_t ws, int64_t n, const void *xq, size_t xs, int64_t nbatch,
                               float *out, int64_t os, int64_t row_begin, int64_t row_end) {
    if (nbatch > LK_MULTI_NB)
        lk_q8_gemm(LK_TYPE_Q4_0, W, ws, n, xq, xs, nbatch, out, os, row_begin, row_end);
    else
        lk_q8w_multi(LK_TYPE_Q4_0, W, ws, n, xq, xs, nbatch, out, os, row_begin, row_end);
}

static void matmul_q8_0_avx512(const void *W, size_t ws, int64_t n, const void *xq, size_t xs, int64_t nbatch,
                               float *out, int64_t os, int64_t row_begin, int64_t row_end) {
    if (nbatch > LK_MULTI_NB)
        lk_q8_gemm(LK_TYPE_Q8_0, W, ws, n, xq, xs, nbatch, out, os, row_begin, row_end);
    else
        lk_q8w_multi(LK_TYPE_Q8_0, W, ws, n, xq, xs, nbatch, out, os, row_begin, row_end);
}

// MARK: - Q4_K and Q6_K

// Word indices repeating sub-block scales over a 64-element chunk.
LK_INLINE __m512i lk_q4_K_scale_index(int chunk) {
    return _mm512_add_epi16(_mm512_set1_epi16((short)(2 * chunk)),
                            _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(1), 1));
}

typedef struct {
    __m512i q[4];        // unsigned quants of the four 64-element chunks
    __m512i scales[4];   // int16 sub-block scales per chunk
    __m256i mins;        // int16 min of each sub-block, repeated for the pairs of group sums
    float d, dmin;
} lk_q4_K_unpacked;

// The eight 6-bit scales and eight 6-bit mins of a Q4_K block as 16 bytes,
// computed in vector registers (scalar code would go through memory and stall
// on store forwarding).
LK_INLINE __m128i lk_q4_K_scale_bytes(const lk_block_q4_K *x) {
    // Words s0, s1, s2 of the packed bytes (the fourth word is qs, ignored).
    __m128i v = _mm_loadu_si128((const __m128i *)x->scales);
    __m128i a = _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 0));  // s0, s2, s1, s2
    __m128i b = _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 1, 0, 0));  // s0, s0, s1, s1
    // scales 0..3 = s0 & 3f; scales 4..7 = (s2 & 0f) | (s0 >> 6 & 3) << 4;
    // mins 0..3 = s1 & 3f;   mins 4..7 = (s2 >> 4 & 0f) | (s1 >> 6 & 3) << 4.
    __m128i low = _mm_and_si128(_mm_srlv_epi32(a, _mm_setr_epi32(0, 0, 0, 4)),
                                _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
    __m128i high = _mm_and_si128(_mm_srli_epi32(b, 2), _mm_setr_epi32(0, 0x30303030, 0, 0x30303030));
    return _mm_or_si128(low, high);
}

LK_INLINE void lk_q4_K_unpack(const lk_block_q4_K *x, lk_q4_K_unpacked *u) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m512i words = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(lk_q4_K_scale_bytes(x)));
    for (int c = 0; c < 4; c++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * c));
        u->q[c] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(q, m4)),
                                      _mm256_and_si256(_mm256_srli_epi16(q, 4), m4), 1);
        u->scales[c] = _mm512_permutexvar_epi16(lk_q4_K_scale_index(c), words);
    }
    // mins are words 8..15; each is used with two group sums.
    const __m256i min_index = _mm256_setr_epi16(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    u->mins = _mm512_castsi512_si256(_mm512_permutexvar_epi16(_mm512_castsi256_si512(min_index), words));
    u->d = lk_h2f(x->d);
    u->dmin = lk_h2f(x->dmin);
}

typedef struct {
    __m512i q[4];        // unsigned quants (q + 32) of the four 64-element chunks
    __m512i scales[4];   // int16 sub-block scales per chunk
    __m256i scales16;    // the 16 scales as int16
    float d;
} lk_q6_K_unpacked;

LK_INLINE void lk_q6_K_unpack(const lk_block_q6_K *x, lk_q6_K_unpacked *u) {
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    const __m512i m2 = _mm512_set1_epi8(0x03);
    const __m512i m30 = _mm512_set1_epi8(0x30);
    for (int h = 0; h < 2; h++) {
        __m512i l = _mm512_loadu_si512(x->ql + 64 * h);
        __m256i qh = _mm256_loadu_si256((const __m256i *)(x->qh + 32 * h));
        __m512i hz = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
        // (l & 0x0f) | ((hz & 3) << 4), and ((l >> 4) & 0x0f) | (hz & 0x30)
        u->q[2 * h] = _mm512_ternarylogic_epi32(l, m4, _mm512_slli_epi16(_mm512_and_si512(hz, m2), 4), 0xEA);
        u->q[2 * h + 1] = _mm512_ternarylogic_epi32(_mm512_srli_epi16(l, 4), m4, _mm512_and_si512(hz, m30), 0xEA);
    }
    u->scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x->scales));
    __m512i words = _mm512_castsi256_si512(u->scales16);
    for (int c = 0; c < 4; c++) {
        const __m512i index = _mm512_set_epi16(
            3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
        u->scales[c] = _mm512_permutexvar_epi16(_mm512_add_epi16(index, _mm512_set1_epi16((short)(4 * c))), words);
    }
    u->d = lk_h2f(x->d);
}

// vpdpwssd written out: the compiler would otherwise split it into vpmaddwd and
// vpaddd under generic tuning.
LK_INLINE __m512i lk_dpwssd(__m512i acc, __m512i a, __m512i b) {
    __asm__("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
    return acc;
}

// Integer sum_j scale_j * dot(q_j, a_j) over one super-block (16 lanes).
LK_INLINE __m512i lk_k_dot(const __m512i *q, const __m512i *scales, const int8_t *a, __m512i acc) {
    for (int c = 0; c < 4; c++) {
        __m512i p = _mm512_maddubs_epi16(q[c], _mm512_loadu_si512(a + 64 * c));
        acc = lk_dpwssd(acc, p, scales[c]);
    }
    return acc;
}

LK_INLINE void lk_q4_K_rows(int RM, int RN, const uint8_t *W, size_t ws, int64_t n,
                            const uint8_t *xq, size_t xs, float *out, int64_t os) {
    const int64_t nsb = n / 256;
    float sums[4][4];
    for (int64_t s0 = 0; s0 < nsb; s0 += LK_K_CHUNK) {
        const int64_t send = nsb - s0 < LK_K_CHUNK ? nsb : s0 + LK_K_CHUNK;
        __m512 acc[4][4];
        for (int r = 0; r < RM; r++)
            for (int b = 0; b < RN; b++) acc[r][b] = _mm512_setzero_ps();
        for (int64_t i = s0; i < send; i++) {
            for (int r = 0; r < RM; r++) {
                const lk_block_q4_K *x = (const lk_block_q4_K *)(W + (size_t)r * ws) + i;
                for (int line = 0; line < 3; line++) _mm_prefetch((const char *)x + LK_PREFETCH_K + 64 * line, _MM_HINT_T0);
                lk_q4_K_unpacked u;
                lk_q4_K_unpack(x, &u);
                for (int b = 0; b < RN; b++) {
                    const lk_block_q8_K *y = (const lk_block_q8_K *)(xq + (size_t)b * xs) + i;
                    __m512i dot = lk_k_dot(u.q, u.scales, y->qs, _mm512_setzero_si512());
                    __m256i mins = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)y->bsums), u.mins);
                    acc[r][b] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(u.d * y->d), acc[r][b]);
                    acc[r][b] = _mm512_fmadd_ps(_mm512_zextps256_ps512(_mm256_cvtepi32_ps(mins)),
                                                _mm512_set1_ps(-u.dmin * y->d), acc[r][b]);
                }
            }
        }
        LK_ADD_CHUNK(RM, RN, acc, sums, s0 == 0)
    }
    for (int b = 0; b < RN; b++)
        for (int r = 0; r < RM; r++) out[b * os + r] = sums[r][b];
}

// Q4_K rows times one activation row. Each 64-byte load of quants covers two
// 32-byte chunks; their low nibbles (sub-blocks 4p and 4p + 2) and high
// nibbles (4p + 1 and 4p + 3) meet activations rearranged to match, once per
// super-block for all rows.
LK_INLINE __m512i lk_word_pair_index(int first, int second) {
    return _mm512_inserti64x4(_mm512_set1_epi16((short)first), _mm256_set1_epi16((short)second), 1);
}

LK_INLINE void lk_q4_K_gemv_rows(int RM, const uint8_t *W, size_t ws, int64_t n, const uint8_t *xq, float *out) {
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    const __m256i min_index = _mm256_setr_epi16(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    const int64_t nsb = n / 256;
    float sums[4][1];
    for (int64_t s0 = 0; s0 < nsb; s0 += LK_K_CHUNK) {
        const int64_t send = nsb - s0 < LK_K_CHUNK ? nsb : s0 + LK_K_CHUNK;
        __m512 acc[4][1];
        for (int r = 0; r < RM; r++) acc[r][0] = _mm512_setzero_ps();
        for (int64_t i = s0; i < send; i++) {
            const lk_block_q8_K *y = (const lk_block_q8_K *)xq + i;
            __m512i alo[2], ahi[2];
            for (int p = 0; p < 2; p++) {
                const int8_t *a = y->qs + 128 * p;
                alo[p] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)a)),
                                            _mm256_loadu_si256((const __m256i *)(a + 64)), 1);
                ahi[p] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(a + 32))),
                                            _mm256_loadu_si256((const __m256i *)(a + 96)), 1);
            }
            __m256i bsums = _mm256_loadu_si256((const __m256i *)y->bsums);
            for (int r = 0; r < RM; r++) {
                const lk_block_q4_K *x = (const lk_block_q4_K *)(W + (size_t)r * ws) + i;
                for (int line = 0; line < 3; line++) _mm_prefetch((const char *)x + LK_PREFETCH_K + 64 * line, _MM_HINT_T0);
                __m512i words = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(lk_q4_K_scale_bytes(x)));
                __m512i dot_lo = _mm512_setzero_si512(), dot_hi = _mm512_setzero_si512();
                for (int p = 0; p < 2; p++) {
                    __m512i z = _mm512_loadu_si512(x->qs + 64 * p);
                    __m512i lo = _mm512_and_si512(z, m4);
                    __m512i hi = _mm512_and_si512(_mm512_srli_epi16(z, 4), m4);
                    dot_lo = lk_dpwssd(dot_lo, _mm512_maddubs_epi16(lo, alo[p]),
                                       _mm512_permutexvar_epi16(lk_word_pair_index(4 * p, 4 * p + 2), words));
                    dot_hi = lk_dpwssd(dot_hi, _mm512_maddubs_epi16(hi, ahi[p]),
                                       _mm512_permutexvar_epi16(lk_word_pair_index(4 * p + 1, 4 * p + 3), words));
                }
                // Into the lane layout of lk_k_dot: lanes 0..7 take the even
                // sub-blocks (dot_lo: 4p and 4p + 2), lanes 8..15 the odd ones
                // (dot_hi: 4p + 1 and 4p + 3), at the same offsets.
                __m512i dot = _mm512_add_epi32(_mm512_shuffle_i64x2(dot_lo, dot_hi, _MM_SHUFFLE(1, 0, 1, 0)),
                                               _mm512_shuffle_i64x2(dot_lo, dot_hi, _MM_SHUFFLE(3, 2, 3, 2)));
                __m256i mins = _mm512_castsi512_si256(_mm512_permutexvar_epi16(_mm512_castsi256_si512(min_index), words));
                __m256 m = _mm256_cvtepi32_ps(_mm256_madd_epi16(bsums, mins));
                acc[r][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(lk_h2f(x->d) * y->d), acc[r][0]);
                acc[r][0] = _mm512_fmadd_ps(_mm512_zextps256_ps512(m), _mm512_set1_ps(-lk_h2f(x->dmin) * y->d), acc[r][0]);
            }
        }
        LK_ADD_CHUNK(RM, 1, acc, sums, s0 == 0)
    }
    for (int r = 0; r < RM; r++) out[r] = sums[r][0];
}

LK_INLINE void lk_q6_K_rows(int RM, int RN, const uint8_t *W, size_t ws, int64_t n,
                            const uint8_t *xq, size_t xs, float *out, int64_t os) {
    const int64_t nsb = n / 256;
    float sums[4][4];
    for (int64_t s0 = 0; s0 < nsb; s0 += LK_K_CHUNK) {
        const int64_t send = nsb - s0 < LK_K_CHUNK ? nsb : s0 + LK_K_CHUNK;
        __m512 acc[4][4];
        for (int r = 0; r < RM; r++)
            for (int b = 0; b < RN; b++) acc[r][b] = _mm512_setzero_ps();
        for (int64_t i = s0; i < send; i++) {
            for (int r = 0; r < RM; r++) {
                const lk_block_q6_K *x = (const lk_block_q6_K *)(W + (size_t)r * ws) + i;
                for (int line = 0; line < 4; line++) _mm_prefetch((const char *)x + LK_PREFETCH_K + 64 * line, _MM_HINT_T0);
                lk_q6_K_unpacked u;
                lk_q6_K_unpack(x, &u);
                for (int b = 0; b < RN; b++) {
                    const lk_block_q8_K *y = (const lk_block_q8_K *)(xq + (size_t)b * xs) + i;
                    // Quants are stored as q + 32: start from -32 * sum_j scale_j * groupsum_j.
                    __m256i corr = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)y->bsums), u.scales16);
                    corr = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(corr, 5));
                    __m512i dot = lk_k_dot(u.q, u.scales, y->qs, _mm512_zextsi256_si512(corr));
                    acc[r][b] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(u.d * y->d), acc[r][b]);
                }
            }
        }
        LK_ADD_CHUNK(RM, RN, acc, sums, s0 == 0)
    }
    for (int b = 0; b < RN; b++)
        for (int r = 0; r < RM; r++) out[b * os + r] = sums[r][b];
}

#define LK_K_MATMUL_ROWS(name, rows_fn)                                                                       \
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

LK_K_MATMUL_ROWS(matmul_q4_K_rows_avx512, lk_q4_K_rows)
LK_K_MATMUL_ROWS(matmul_q6_K_rows_avx512, lk_q6_K_rows)

// MARK: - Float weights

LK_INLINE __m512 lk_load_f32(const void *p, int64_t i, __mmask16 m) {
    return _mm512_maskz_loadu_ps(m, (const float *)p + i);
}
LK_INLINE __m512 lk_load_f16(const void *p, int64_t i, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)p + i));
}
LK_INLINE __m512 lk_load_bf16(const void *p, int64_t i, __mmask16 m) {
    __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, (const uint16_t *)p + i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}

#define LK_FLOAT_ROWS(name, load)                                                                    \
    LK_INLINE void name(int RM, int RN, const uint8_t *W, size_t ws, int64_t n,                      \
                        const uint8_t *xq, size_t xs, float *out, int64_t os) {                      \
        float sums[4][4];                                                                            \
        for (int64_t k0 = 0; k0 < n; k0 += LK_F_CHUNK) {                                             \
            const int64_t kend = n - k0 < LK_F_CHUNK ? n : k0 + LK_F_CHUNK;                          \
            __m512 acc[4][4];                                                                        \
            for (int r = 0; r < RM; r++)                                                             \
                for (int b = 0; b < RN; b++) acc[r][b] = _mm512_setzero_ps();                        \
            for (int64_t i = k0; i < kend; i += 16) {                                                \
                __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);    \
                __m512 x[4];                                                                         \
                for (int b = 0; b < RN; b++) x[b] = lk_load_f32(xq + (size_t)b * xs, i, m);          \
                for (int r = 0; r < RM; r++) {                                                       \
                    __m512 w = load(W + (size_t)r * ws, i, m);                                       \
                    for (int b = 0; b < RN; b++) acc[r][b] = _mm512_fmadd_ps(w, x[b], acc[r][b]);    \
                }                                                                                    \
            }                                                                                        \
            LK_ADD_CHUNK(RM, RN, acc, sums, k0 == 0)                                                 \
        }                                                                                            \
        for (int b = 0; b < RN; b++)                                                                 \
            for (int r = 0; r < RM; r++) out[b * os + r] = sums[r][b];                               \
    }

LK_FLOAT_ROWS(lk_f32_rows, lk_load_f32)
LK_FLOAT_ROWS(lk_f16_rows, lk_load_f16)
LK_FLOAT_ROWS(lk_bf16_rows, lk_load_bf16)

LK_K_MATMUL_ROWS(matmul_f32_rows_avx512, lk_f32_rows)
LK_K_MATMUL_ROWS(matmul_f16_rows_avx512, lk_f16_rows)
LK_K_MATMUL_ROWS(matmul_bf16_rows_avx512, lk_bf16_rows)

// MARK: - Q4_K and Q6_K: matrix-matrix with unpacked weight panels

// One super-block of one weight row, unpacked for reuse across many activation
// rows. Q4_K: the value is d * sum_j scale_j * dot(q_j, a_j) plus
// dcorr * sum_k corr16_k * groupsum_k (corr16: the mins, dcorr = -dmin), the
// two terms added in float. Q6_K: d * (sum_k corr16_k * groupsum_k +
// sum_j scale_j * dot(q_j, a_j)) with corr16 = -32 * scales, all in integers
// (as the row kernel computes it).
typedef struct {
    __m512i q[4];
    __m512i scales[4];
    __m256i corr16;
    float d, dcorr;
    float pad[6];
} lk_k_panel;

#define LK_KGEMM_RM 4
#define LK_KGEMM_RN 3
#define LK_KGEMM_KC LK_K_CHUNK  // super-blocks per panel: one chunk

static void lk_build_k_panels(int type, const uint8_t *W, size_t ws, int64_t r0, int rows,
                              int64_t s0, int64_t ns, lk_k_panel *panel) {
    for (int r = 0; r < LK_KGEMM_RM; r++) {
        for (int64_t s = 0; s < ns; s++) {
            lk_k_panel *p = panel + s * LK_KGEMM_RM + r;
            if (r >= rows) {
                memset(p, 0, sizeof(*p));
                continue;
            }
            const uint8_t *row = W + (size_t)(r0 + r) * ws;
            if (type == LK_TYPE_Q4_K) {
                lk_q4_K_unpacked u;
                lk_q4_K_unpack((const lk_block_q4_K *)row + s0 + s, &u);
                for (int c = 0; c < 4; c++) { p->q[c] = u.q[c]; p->scales[c] = u.scales[c]; }
                p->corr16 = u.mins;
                p->d = u.d;
                p->dcorr = -u.dmin;
            } else {
                lk_q6_K_unpacked u;
                lk_q6_K_unpack((const lk_block_q6_K *)row + s0 + s, &u);
                for (int c = 0; c < 4; c++) { p->q[c] = u.q[c]; p->scales[c] = u.scales[c]; }
                p->corr16 = _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(u.scales16, 5));
                p->d = u.d;
                p->dcorr = 0.0f;
            }
        }
    }
}

LK_INLINE void lk_k_gemm_tile(int type, int RN, const lk_k_panel *panel, int64_t ns, const uint8_t *const *acts,
                              float *out, int64_t os, int rows, int accumulate) {
    __m512 acc[LK_KGEMM_RM][LK_KGEMM_RN];
    for (int r = 0; r < LK_KGEMM_RM; r++)
        for (int b = 0; b < RN; b++) acc[r][b] = _mm512_setzero_ps();
    for (int64_t s = 0; s < ns; s++) {
        const lk_k_panel *p = panel + s * LK_KGEMM_RM;
        const lk_block_q8_K *y[LK_KGEMM_RN];
        for (int b = 0; b < RN; b++) y[b] = (const lk_block_q8_K *)acts[b] + s;
        __m512i dot[LK_KGEMM_RM][LK_KGEMM_RN];
        if (type == LK_TYPE_Q6_K) {
            for (int b = 0; b < RN; b++) {
                __m256i bsums = _mm256_loadu_si256((const __m256i *)y[b]->bsums);
                for (int r = 0; r < LK_KGEMM_RM; r++)
                    dot[r][b] = _mm512_zextsi256_si512(_mm256_madd_epi16(bsums, p[r].corr16));
            }
        } else {
            for (int r = 0; r < LK_KGEMM_RM; r++)
                for (int b = 0; b < RN; b++) dot[r][b] = _mm512_setzero_si512();
        }
        for (int c = 0; c < 4; c++) {
            __m512i a[LK_KGEMM_RN];
            for (int b = 0; b < RN; b++) a[b] = _mm512_loadu_si512(y[b]->qs + 64 * c);
            for (int r = 0; r < LK_KGEMM_RM; r++) {
                __m512i q = p[r].q[c];
                for (int b = 0; b < RN; b++)
                    dot[r][b] = lk_dpwssd(dot[r][b], _mm512_maddubs_epi16(q, a[b]), p[r].scales[c]);
            }
        }
        for (int b = 0; b < RN; b++) {
            __m256i bsums = _mm256_loadu_si256((const __m256i *)y[b]->bsums);
            float da = y[b]->d;
            for (int r = 0; r < LK_KGEMM_RM; r++) {
                acc[r][b] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[r][b]), _mm512_set1_ps(p[r].d * da), acc[r][b]);
                if (type == LK_TYPE_Q4_K) {
                    __m256 corr = _mm256_cvtepi32_ps(_mm256_madd_epi16(bsums, p[r].corr16));
                    acc[r][b] = _mm512_fmadd_ps(_mm512_zextps256_ps512(corr), _mm512_set1_ps(p[r].dcorr * da), acc[r][b]);
                }
            }
        }
    }
    for (int b = 0; b < RN; b++) {
        for (int r = 0; r < rows; r++) {
            float v = lk_hsum512(acc[r][b]);
            float *o = out + b * os + r;
            *o = accumulate ? *o + v : v;
        }
    }
}

LK_INLINE void lk_k_gemm(int type, const void *W, size_t ws, int64_t n, const void *xq, size_t xs, int64_t nbatch,
                      float *out, int64_t os, int64_t row_begin, int64_t row_end) {
    const int64_t nsb = n / 256;
    _Alignas(64) lk_k_panel panel[LK_KGEMM_KC * LK_KGEMM_RM];
    const int64_t block = lk_batch_block(LK_KGEMM_KC * (int64_t)sizeof(lk_block_q8_K), LK_KGEMM_RN, 1 << 20);
    for (int64_t bb = 0; bb < nbatch; bb += block) {
        const int64_t bend = nbatch - bb < block ? nbatch : bb + block;
        for (int64_t r0 = row_begin; r0 < row_end; r0 += LK_KGEMM_RM) {
            int rows = row_end - r0 >= LK_KGEMM_RM ? LK_KGEMM_RM : (int)(row_end - r0);
            for (int64_t s0 = 0; s0 < nsb; s0 += LK_KGEMM_KC) {
                int64_t ns = nsb - s0 < LK_KGEMM_KC ? nsb - s0 : LK_KGEMM_KC;
                lk_build_k_panels(type, (const uint8_t *)W, ws, r0, rows, s0, ns, panel);
                for (int64_t b0 = bb; b0 < bend; b0 += LK_KGEMM_RN) {
                    const uint8_t *acts[LK_KGEMM_RN];
                    int cols = bend - b0 >= LK_KGEMM_RN ? LK_KGEMM_RN : (int)(bend - b0);
                    for (int b = 0; b < cols; b++)
                        acts[b] = (const uint8_t *)xq + (size_t)(b0 + b) * xs + (size_t)s0 * sizeof(lk_block_q8_K);
                    float *o = out + b0 * os + r0;
                    switch (cols) {
                    case 3: lk_k_gemm_tile(type, 3, panel, ns, acts, o, os, rows, s0 > 0); break;
                    case 2: lk_k_gemm_tile(type, 2, panel, ns, acts, o, os, rows, s0 > 0); break;
                    default: lk_k_gemm_tile(type, 1, panel, ns, acts, o, os, rows, s0 > 0); break;
                    }
                }
            }
        }
    }
}

// The two K-quant types as separate functions, each with its type fixed.
static void lk_q4_K_gemm(int type, const void *W, size_t ws, int64_t n, const void *xq, size_t xs, int64_t nbatch,
                         float *out, int64_t os, int64_t row_begin, int64_t row_end) {
    (void)type;
    lk_k_gemm(LK_TYPE_Q4_K, W, ws, n, xq, xs, nbatch, out, os, row_begin, row_end);
}

static void lk_q6_K_gemm(int type, const void *W, size_t ws, int64_t n, const void *xq, size_t xs, int64_t nbatch,
                         float *out, int64_t os, int64_t row_begin, int64_t row_end) {
    (void)type;
    lk_k_gemm(LK_TYPE_Q6_K, W, ws, n, xq, xs, nbatch, out, os, row_begin, row_end);
}

// MARK: - Float weights: matrix-matrix with converted weight panels

#define LK_FGEMM_RM 4
#define LK_FGEMM_RN 6
#define LK_FGEMM_KC LK_F_CHUNK  // elements per panel: one chunk
// Panel row stride, padded so the rows do not share cache sets.
#define LK_FGEMM_STRIDE (LK_FGEMM_KC + 16)

LK_INLINE void lk_f_gemm_tile(int RN, const float *panel, int64_t kc, const float *const *acts,
                              float *out, int64_t os, int rows, int accumulate) {
    __m512 acc[LK_FGEMM_RM][LK_FGEMM_RN];
    for (int r = 0; r < LK_FGEMM_RM; r++)
        for (int b = 0; b < RN; b++) acc[r][b] = _mm512_setzero_ps();
    for (int64_t i = 0; i < kc; i += 16) {
        __mmask16 m = kc - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (kc - i)) - 1);
        __m512 x[LK_FGEMM_RN];
        for (int b = 0; b < RN; b++) x[b] = _mm512_maskz_loadu_ps(m, acts[b] + i);
        for (int r = 0; r < LK_FGEMM_RM; r++) {
            __m512 w = _mm512_load_ps(panel + r * LK_FGEMM_STRIDE + i);
            for (int b = 0; b < RN; b++) acc[r][b] = _mm512_fmadd_ps(w, x[b], acc[r][b]);
        }
    }
    for (int b = 0; b < RN; b++) {
        for (int r = 0; r < rows; r++) {
            float v = lk_hsum512(acc[r][b]);
            float *o = out + b * os + r;
            *o = accumulate ? *o + v : v;
        }
    }
}

static void lk_f_gemm(int type, const void *W, size_t ws, int64_t n, const void *xq, size_t xs, int64_t nbatch,
                      float *out, int64_t os, int64_t row_begin, int64_t row_end) {
    _Alignas(64) float panel[LK_FGEMM_RM * LK_FGEMM_STRIDE];
    const int64_t block = lk_batch_block(LK_FGEMM_KC * (int64_t)sizeof(float), LK_FGEMM_RN, 1 << 18);
    for (int64_t bb = 0; bb < nbatch; bb += block) {
        const int64_t bend = nbatch - bb < block ? nbatch : bb + block;
        for (int64_t r0 = row_begin; r0 < row_end; r0 += LK_FGEMM_RM) {
            int rows = row_end - r0 >= LK_FGEMM_RM ? LK_FGEMM_RM : (int)(row_end - r0);
            for (int64_t k0 = 0; k0 < n; k0 += LK_FGEMM_KC) {
                int64_t kc = n - k0 < LK_FGEMM_KC ? n - k0 : LK_FGEMM_KC;
                for (int r = 0; r < LK_FGEMM_RM; r++) {
                    float *dst = panel + r * LK_FGEMM_STRIDE;
                    const uint8_t *row = (const uint8_t *)W + (size_t)(r0 + (r < rows ? r : 0)) * ws;
                    for (int64_t i = 0; i < kc; i += 16) {
                        __mmask16 m = kc - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (kc - i)) - 1);
                        __m512 v = type == LK_TYPE_F32 ? lk_load_f32(row, k0 + i, m)
                                 : type == LK_TYPE_F16 ? lk_load_f16(row, k0 + i, m) : lk_load_bf16(row, k0 + i, m);
                        _mm512_store_ps(dst + i, r < rows ? v : _mm512_setzero_ps());
                    }
                }
                for (int64_t b0 = bb; b0 < bend; b0 += LK_FGEMM_RN) {
                    const float *acts[LK_FGEMM_RN];
                    int cols = bend - b0 >= LK_FGEMM_RN ? LK_FGEMM_RN : (int)(bend - b0);
                    for (int b = 0; b < cols; b++)
                        acts[b] = (const float *)((const uint8_t *)xq + (size_t)(b0 + b) * xs) + k0;
                    float *o = out + b0 * os + r0;
                    switch (cols) {
                    case 6: lk_f_gemm_tile(6, panel, kc, acts, o, os, rows, k0 > 0); break;
                    case 5: lk_f_gemm_tile(5, panel, kc, acts, o, os, rows, k0 > 0); break;
                    case 4: lk_f_gemm_tile(4, panel, kc, acts, o, os, rows, k0 > 0); break;
                    case 3: lk_f_gemm_tile(3, panel, kc, acts, o, os, rows, k0 > 0); break;
                    case 2: lk_f_gemm_tile(2, panel, kc, acts, o, os, rows, k0 > 0); break;
                    default: lk_f_gemm_tile(1, panel, kc, acts, o, os, rows, k0 > 0); break;
                    }
                }
            }
        }
    }
}

// Small batches use the row kernels, larger ones the panel kernels.
#define LK_DISPATCH(name, rows_fn, gemm, type)                                                         \
    static void name(const void *W, size_t ws, int64_t n, const void *xq, size_t xs, int64_t nbatch,   \
                     float *out, int64_t os, int64_t row_begin, int64_t row_end) {                     \
        if (nbatch > LK_GEMV_MAX_BATCH)                                                                \
            gemm(type, W, ws, n, xq, xs, nbatch, out, os, row_begin, row_end);                         \
        else                                                                                           \
            rows_fn(W, ws, n, xq, xs, nbatch, out, os, row_begin, row_end);                            \
    }

static void matmul_q4_K_small_avx512(const void *W, size_t ws, int64_t n, const void *xq, size_t xs, int64_t nbatch,
                                     float *out, int64_t os, int64_t row_begin, int64_t row_end) {
    if (nbatch != 1) {
        matmul_q4_K_rows_avx512(W, ws, n, xq, xs, nbatch, out, os, row_begin, row_end);
        return;
    }
    const uint8_t *w = (const uint8_t *)W;
    int64_t r = row_begin;
    for (; r + 4 <= row_end; r += 4) lk_q4_K_gemv_rows(4, w + (size_t)r * ws, ws, n, (const uint8_t *)xq, out + r);
    for (; r < row_end; r++) lk_q4_K_gemv_rows(1, w + (size_t)r * ws, ws, n, (const uint8_t *)xq, out + r);
}

LK_DISPATCH(matmul_q4_K_avx512, matmul_q4_K_small_avx512, lk_q4_K_gemm, LK_TYPE_Q4_K)
LK_DISPATCH(matmul_q6_K_avx512, matmul_q6_K_rows_avx512, lk_q6_K_gemm, LK_TYPE_Q6_K)
LK_DISPATCH(matmul_f32_avx512, matmul_f32_rows_avx512, lk_f_gemm, LK_TYPE_F32)
LK_DISPATCH(matmul_f16_avx512, matmul_f16_rows_avx512, lk_f_gemm, LK_TYPE_F16)
LK_DISPATCH(matmul_bf16_avx512, matmul_bf16_rows_avx512, lk_f_gemm, LK_TYPE_BF16)

// MARK: - Vector helpers

static float dot_f32_avx512(const float *a, const float *b, int64_t n) {
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
    }
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc0);
    }
    return lk_hsum512(_mm512_add_ps(acc0, acc1));
}

static void axpy_f32_avx512(int64_t n, float a, const float *x, float *y) {
    __m512 va = _mm512_set1_ps(a);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i));
        _mm512_mask_storeu_ps(y + i, m, v);
    }
}

static float dot_f16_f32_avx512(const uint16_t *a, const float *b, int64_t n) {
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        acc0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(a + i))), _mm512_loadu_ps(b + i), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(a + i + 16))), _mm512_loadu_ps(b + i + 16), acc1);
    }
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        acc0 = _mm512_fmadd_ps(lk_load_f16(a, i, m), _mm512_maskz_loadu_ps(m, b + i), acc0);
    }
    return lk_hsum512(_mm512_add_ps(acc0, acc1));
}

static void axpy_f16_avx512(int64_t n, float a, const uint16_t *x, float *y) {
    __m512 va = _mm512_set1_ps(a);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_fmadd_ps(va, lk_load_f16(x, i, m), _mm512_maskz_loadu_ps(m, y + i));
        _mm512_mask_storeu_ps(y + i, m, v);
    }
}

static void f16_to_f32_avx512(const uint16_t *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(dst + i, m, lk_load_f16(src, i, m));
    }
}

static void f32_to_f16_avx512(const float *src, uint16_t *dst, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m256i h = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm256_mask_storeu_epi16(dst + i, m, h);
    }
}

// MARK: - Activation encoding

// lk_quantize_activations for Q4_0 and Q8_0 weights with the bytes of the portable
// loop: the block maximum is exact, the scale and its inverse are the same scalar
// operations, each quant is the same product rounded to nearest even (the default
// rounding of the conversion) and truncated to 8 bits.
static void quantize_q8_act_avx512(const float *x, void *dst, int64_t n) {
    const int64_t nb = n / 32;
    lk_block_q8_0 *blocks = (lk_block_q8_0 *)dst;
    lk_q8_act_clear_padding(dst, n);
    const __m512 sign = _mm512_set1_ps(-0.0f);
    for (int64_t i = 0; i < nb; i++) {
        __m512 a = _mm512_loadu_ps(x + 32 * i), b = _mm512_loadu_ps(x + 32 * i + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_andnot_ps(sign, a), _mm512_andnot_ps(sign, b)));
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        __m512 vid = _mm512_set1_ps(id);
        __m512i qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, vid)), qb = _mm512_cvtps_epi32(_mm512_mul_ps(b, vid));
        __m128i pa = _mm512_cvtepi32_epi8(qa), pb = _mm512_cvtepi32_epi8(qb);
        blocks[i].d = lk_float_to_half(d);
        _mm_storeu_si128((__m128i *)blocks[i].qs, pa);
        _mm_storeu_si128((__m128i *)(blocks[i].qs + 16), pb);
        // Sum of the 8-bit values (the truncation is what the quants hold).
        int32_t sum = _mm512_reduce_add_epi32(_mm512_add_epi32(_mm512_cvtepi8_epi32(pa), _mm512_cvtepi8_epi32(pb)));
        lk_q8_act_place(dst, n, i, &blocks[i], sum);
    }
}

// MARK: - SwiGLU

// e^x for x in [-104, 89] (clamped there: beyond, the result is 0 or +inf all the
// same for silu): x = n ln 2 + r with |r| <= ln 2 / 2, e^r by the degree-6
// polynomial of the Cephes expf, then scaled by 2^n (scalef handles the
// subnormal and overflowing ends). Relative error about 2e-7.
LK_INLINE __m512 lk_exp512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(89.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    const __m512 y = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(y, n);
}

static void swiglu_avx512(float *gate, const float *up, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
        const __m512 g = _mm512_maskz_loadu_ps(m, gate + i), u = _mm512_maskz_loadu_ps(m, up + i);
        const __m512 e = lk_exp512(_mm512_sub_ps(_mm512_setzero_ps(), g));
        _mm512_mask_storeu_ps(gate + i, m, _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), u));
    }
}

// MARK: - Attention
//
// lk_attention with each head's query (scores) or output (weighted values) held in
// registers instead of one dot_f32 or axpy_f32 call per cached row: the same
// products, sums and FMAs in the same order as dot_f32_avx512 (two accumulators
// taking alternate 16-element slices, then lk_hsum512) and axpy_f32_avx512 (one
// FMA per slice into the output, rows in position order), so results are
// bitwise those of the generic loop. Rows of halves (lk_attention_f16) are
// widened slice by slice, as dot_f16_f32_avx512 and axpy_f16_avx512 do.
//
// Positions are taken in blocks, and every head of the call visits a block before
// the next block starts: one head's slice of a cached row is a few cache lines in
// a row kv_stride apart from the next position's (a new page each time for a
// 4096-wide cache), which neither the hardware prefetchers nor the TLB follow well
// head after head, whereas the heads of one block walk each row's lines in order.
// An output is kept in registers over a block and in memory between blocks.
// Measured on one thread, one token, 32 heads x 128 over 200 positions of an f16
// cache streamed from memory (64 caches in turn): 600-780 us -> 245-290 us with
// blocks of 8 positions (4: 290-380, 16: 260-350, 32: 360-380); at 1000 positions
// 3430 -> 1400 us.

#define LK_ATTENTION_BLOCK 8

// Slice j (16 elements) of a cached row of floats or of halves.
LK_INLINE __m512 lk_kv_slice(int half, const void *row, int j) {
    return half ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)row + 16 * j)))
                : _mm512_loadu_ps((const float *)row + 16 * j);
}

LK_INLINE void lk_attention_blocks(int NV, int half, const float *q, int64_t q_stride, int64_t nkv, int64_t group,
                                   const void *k, const void *v, int64_t kv_stride, int64_t npos, float scale,
                                   float *scores, float *out, int64_t out_stride) {
    const size_t elem = half ? sizeof(uint16_t) : sizeof(float);
    const size_t row_bytes = (size_t)kv_stride * elem, head_bytes = (size_t)NV * 16 * elem;
    const int64_t nq = nkv * group;
    __m512 r[16];
    for (int64_t p0 = 0; p0 < npos; p0 += LK_ATTENTION_BLOCK) {
        const int64_t p1 = npos - p0 < LK_ATTENTION_BLOCK ? npos : p0 + LK_ATTENTION_BLOCK;
        for (int64_t h = 0; h < nq; h++) {
            const float *qh = q + h * q_stride;
            const char *kh = (const char *)k + (size_t)(h / group) * head_bytes;
            float *s = scores + h * npos;
            for (int j = 0; j < NV; j++) r[j] = _mm512_loadu_ps(qh + 16 * j);
            for (int64_t p = p0; p < p1; p++) {
                const char *kp = kh + (size_t)p * row_bytes;
                __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
                for (int j = 0; j < NV; j += 2) {
                    acc0 = _mm512_fmadd_ps(r[j], lk_kv_slice(half, kp, j), acc0);
                    acc1 = _mm512_fmadd_ps(r[j + 1], lk_kv_slice(half, kp, j + 1), acc1);
                }
                s[p] = lk_hsum512(_mm512_add_ps(acc0, acc1)) * scale;
            }
        }
    }
    for (int64_t h = 0; h < nq; h++) lk_softmax(scores + h * npos, npos);
    for (int64_t p0 = 0; p0 < npos; p0 += LK_ATTENTION_BLOCK) {
        const int64_t p1 = npos - p0 < LK_ATTENTION_BLOCK ? npos : p0 + LK_ATTENTION_BLOCK;
        for (int64_t h = 0; h < nq; h++) {
            const char *vh = (const char *)v + (size_t)(h / group) * head_bytes;
            const float *s = scores + h * npos;
            float *oh = out + h * out_stride;
            for (int j = 0; j < NV; j++) r[j] = p0 == 0 ? _mm512_setzero_ps() : _mm512_loadu_ps(oh + 16 * j);
            for (int64_t p = p0; p < p1; p++) {
                const char *vp = vh + (size_t)p * row_bytes;
                __m512 w = _mm512_set1_ps(s[p]);
                for (int j = 0; j < NV; j++) r[j] = _mm512_fmadd_ps(w, lk_kv_slice(half, vp, j), r[j]);
            }
            for (int j = 0; j < NV; j++) _mm512_storeu_ps(oh + 16 * j, r[j]);
        }
    }
}

LK_INLINE void lk_attention_any(int half, const float *q, int64_t q_stride, int64_t nkv, int64_t group,
                                const void *k, const void *v, int64_t kv_stride, int64_t head_dim, int64_t npos,
                                float scale, float *scores, float *out, int64_t out_stride) {
#define LK_ATTENTION_CASE(NV)                                                                                 \
    case NV / 2:                                                                                              \
        lk_attention_blocks(NV, half, q, q_stride, nkv, group, k, v, kv_stride, npos, scale, scores, out,    \
                            out_stride);                                                                      \
        break;
    switch (head_dim / 32) {
        LK_ATTENTION_CASE(2)
        LK_ATTENTION_CASE(4)
        LK_ATTENTION_CASE(6)
        LK_ATTENTION_CASE(8)
        LK_ATTENTION_CASE(10)
        LK_ATTENTION_CASE(12)
        LK_ATTENTION_CASE(14)
        LK_ATTENTION_CASE(16)
    }
#undef LK_ATTENTION_CASE
}

static void attention_avx512(const float *q, int64_t q_stride, int64_t nkv, int64_t group, const float *k,
                             const float *v, int64_t kv_stride, int64_t head_dim, int64_t npos, float scale,
                             float *scores, float *out, int64_t out_stride) {
    lk_attention_any(0, q, q_stride, nkv, group, k, v, kv_stride, head_dim, npos, scale, scores, out, out_stride);
}

static void attention_f16_avx512(const float *q, int64_t q_stride, int64_t nkv, int64_t group, const uint16_t *k,
                                 const uint16_t *v, int64_t kv_stride, int64_t head_dim, int64_t npos, float scale,
                                 float *scores, float *out, int64_t out_stride) {
    lk_attention_any(1, q, q_stride, nkv, group, k, v, kv_stride, head_dim, npos, scale, scores, out, out_stride);
}

#pragma clang attribute pop

const lk_impl lk_impl_avx512 = {
    .matmul_f32 = matmul_f32_avx512,
    .matmul_f16 = matmul_f16_avx512,
    .matmul_bf16 = matmul_bf16_avx512,
    .matmul_q4_0 = matmul_q4_0_avx512,
    .matmul_q8_0 = matmul_q8_0_avx512,
    .matmul_q4_K = matmul_q4_K_avx512,
    .matmul_q6_K = matmul_q6_K_avx512,
    .dot_f32 = dot_f32_avx512,
    .axpy_f32 = axpy_f32_avx512,
    .dot_f16_f32 = dot_f16_f32_avx512,
    .axpy_f16 = axpy_f16_avx512,
    .f16_to_f32 = f16_to_f32_avx512,
    .f32_to_f16 = f32_to_f16_avx512,
    .quantize_q8_act = quantize_q8_act_avx512,
    .swiglu = swiglu_avx512,
    .attention = attention_avx512,
    .attention_f16 = attention_f16_avx512,
};

#endif

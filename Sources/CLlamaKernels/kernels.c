// Public entry points: type table, encoding and decoding, activation encoding,
// instruction-set dispatch.

#include "internal.h"

#include <stdatomic.h>
#include <string.h>

// MARK: - Instruction-set selection

static int lk_detect_features(void) {
    int f = 0;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) f |= LK_CPU_SSE42;
    if (__builtin_cpu_supports("avx")) f |= LK_CPU_AVX;
    if (__builtin_cpu_supports("avx2")) f |= LK_CPU_AVX2;
    if (__builtin_cpu_supports("fma")) f |= LK_CPU_FMA;
    if (__builtin_cpu_supports("f16c")) f |= LK_CPU_F16C;
    if (__builtin_cpu_supports("avx512f")) f |= LK_CPU_AVX512F;
    if (__builtin_cpu_supports("avx512bw")) f |= LK_CPU_AVX512BW;
    if (__builtin_cpu_supports("avx512vl")) f |= LK_CPU_AVX512VL;
    if (__builtin_cpu_supports("avx512dq")) f |= LK_CPU_AVX512DQ;
    if (__builtin_cpu_supports("avx512vnni")) f |= LK_CPU_AVX512VNNI;
#endif
    return f;
}

static _Atomic int lk_features = -1;

int lk_cpu_features(void) {
    int f = atomic_load_explicit(&lk_features, memory_order_relaxed);
    if (f < 0) {
        f = lk_detect_features();
        atomic_store_explicit(&lk_features, f, memory_order_relaxed);
    }
    return f;
}

const char *lk_cpu_feature_names(void) {
    static const struct { int bit; const char *name; } names[] = {
        {LK_CPU_SSE42, "sse4.2"}, {LK_CPU_AVX, "avx"}, {LK_CPU_AVX2, "avx2"}, {LK_CPU_FMA, "fma"},
        {LK_CPU_F16C, "f16c"}, {LK_CPU_AVX512F, "avx512f"}, {LK_CPU_AVX512BW, "avx512bw"},
        {LK_CPU_AVX512VL, "avx512vl"}, {LK_CPU_AVX512DQ, "avx512dq"}, {LK_CPU_AVX512VNNI, "avx512vnni"},
    };
    static char text[160];
    static _Atomic int done = 0;
    if (!atomic_load_explicit(&done, memory_order_acquire)) {
        char buffer[160] = "";
        int f = lk_cpu_features();
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            if (!(f & names[i].bit)) continue;
            if (buffer[0]) strcat(buffer, " ");
            strcat(buffer, names[i].name);
        }
        memcpy(text, buffer, sizeof text);
        atomic_store_explicit(&done, 1, memory_order_release);
    }
    return text;
}

static int lk_detect_isa(void) {
    const int f = lk_cpu_features();
    const int avx2 = LK_CPU_AVX2 | LK_CPU_FMA | LK_CPU_F16C;
    const int avx512 = avx2 | LK_CPU_AVX512F | LK_CPU_AVX512BW | LK_CPU_AVX512VL | LK_CPU_AVX512DQ | LK_CPU_AVX512VNNI;
    if ((f & avx512) == avx512) return LK_ISA_AVX512;
    if ((f & avx2) == avx2) return LK_ISA_AVX2;
    return LK_ISA_SCALAR;
}

// -1 until first use; then the level in use.
static _Atomic int lk_current_isa = -1;
static _Atomic int lk_max_isa = -1;

int lk_isa_max_level(void) {
    int level = atomic_load_explicit(&lk_max_isa, memory_order_relaxed);
    if (level < 0) {
        level = lk_detect_isa();
        atomic_store_explicit(&lk_max_isa, level, memory_order_relaxed);
    }
    return level;
}

// A level chosen for one thread by lk_force_isa (-1: none), so that tests comparing levels do
// not change what other threads of the process compute with.
static _Thread_local int lk_thread_isa = -1;

int lk_isa_level(void) {
    if (lk_thread_isa >= 0) return lk_thread_isa;
    int level = atomic_load_explicit(&lk_current_isa, memory_order_relaxed);
    if (level < 0) {
        level = lk_isa_max_level();
        int expected = -1;
        atomic_compare_exchange_strong(&lk_current_isa, &expected, level);
        level = atomic_load_explicit(&lk_current_isa, memory_order_relaxed);
    }
    return level;
}

void lk_force_isa(int level) {
    int max = lk_isa_max_level();
    if (level < 0) level = 0;
    if (level > max) level = max;
    lk_thread_isa = level;
}

const char *lk_isa_name(void) {
    switch (lk_isa_level()) {
    case LK_ISA_AVX512: return "avx512";
    case LK_ISA_AVX2: return "avx2";
    default: return "scalar";
    }
}

static const lk_impl *lk_impl_current(void) {
#if defined(__x86_64__)
    switch (lk_isa_level()) {
    case LK_ISA_AVX512: return &lk_impl_avx512;
    case LK_ISA_AVX2: return &lk_impl_avx2;
    default: break;
    }
#endif
    return &lk_impl_scalar;
}

void lk_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

// MARK: - Type table

int64_t lk_block_elements(int type) {
    switch (type) {
    case LK_TYPE_F32: case LK_TYPE_F16: case LK_TYPE_BF16: return 1;
    case LK_TYPE_Q4_0: case LK_TYPE_Q8_0: return 32;
    case LK_TYPE_Q4_K: case LK_TYPE_Q6_K: case LK_TYPE_Q8_K: return 256;
    default: return 0;
    }
}

static size_t lk_block_bytes(int type) {
    switch (type) {
    case LK_TYPE_F32: return 4;
    case LK_TYPE_F16: case LK_TYPE_BF16: return 2;
    case LK_TYPE_Q4_0: return sizeof(lk_block_q4_0);
    case LK_TYPE_Q8_0: return sizeof(lk_block_q8_0);
    case LK_TYPE_Q4_K: return sizeof(lk_block_q4_K);
    case LK_TYPE_Q6_K: return sizeof(lk_block_q6_K);
    case LK_TYPE_Q8_K: return sizeof(lk_block_q8_K);
    default: return 0;
    }
}

size_t lk_row_size(int type, int64_t n) {
    int64_t block = lk_block_elements(type);
    if (block == 0 || n < 0) return 0;
    return (size_t)(n / block) * lk_block_bytes(type);
}

int lk_vec_dot_type(int weight_type) {
    switch (weight_type) {
    case LK_TYPE_F32: case LK_TYPE_F16: case LK_TYPE_BF16: return LK_TYPE_F32;
    case LK_TYPE_Q4_0: case LK_TYPE_Q8_0: return LK_TYPE_Q8_0;
    case LK_TYPE_Q4_K: case LK_TYPE_Q6_K: return LK_TYPE_Q8_K;
    default: return -1;
    }
}

// MARK: - Decoding

static void lk_dequantize_q4_0(const lk_block_q4_0 *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        float d = lk_half_to_float(x[i].d);
        for (int j = 0; j < 16; j++) {
            y[i * 32 + j] = (float)((x[i].qs[j] & 0xf) - 8) * d;
            y[i * 32 + j + 16] = (float)((x[i].qs[j] >> 4) - 8) * d;
        }
    }
}

static void lk_dequantize_q8_0(const lk_block_q8_0 *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        float d = lk_half_to_float(x[i].d);
        for (int j = 0; j < 32; j++) y[i * 32 + j] = (float)x[i].qs[j] * d;
    }
}

static void lk_dequantize_q4_K(const lk_block_q4_K *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        float d = lk_half_to_float(x[i].d);
        float dmin = lk_half_to_float(x[i].dmin);
        const uint8_t *q = x[i].qs;
        for (int chunk = 0; chunk < 4; chunk++) {
            uint8_t sc0, m0, sc1, m1;
            lk_q4_K_scale_min(2 * chunk, x[i].scales, &sc0, &m0);
            lk_q4_K_scale_min(2 * chunk + 1, x[i].scales, &sc1, &m1);
            float d0 = d * sc0, min0 = dmin * m0, d1 = d * sc1, min1 = dmin * m1;
            for (int l = 0; l < 32; l++) {
                y[l] = d0 * (float)(q[l] & 0xf) - min0;
                y[l + 32] = d1 * (float)(q[l] >> 4) - min1;
            }
            q += 32;
            y += 64;
        }
    }
}

static void lk_dequantize_q6_K(const lk_block_q6_K *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        float d = lk_half_to_float(x[i].d);
        for (int half = 0; half < 2; half++) {
            const uint8_t *ql = x[i].ql + 64 * half;
            const uint8_t *qh = x[i].qh + 32 * half;
            const int8_t *sc = x[i].scales + 8 * half;
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = ((ql[l] & 0xf) | (((qh[l] >> 0) & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * sc[is + 0] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
            y += 128;
        }
    }
}

static void lk_dequantize_q8_K(const lk_block_q8_K *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        for (int j = 0; j < 256; j++) y[i * 256 + j] = x[i].d * (float)x[i].qs[j];
    }
}

void lk_dequantize_row(int type, const void *src, float *dst, int64_t n) {
    switch (type) {
    case LK_TYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case LK_TYPE_F16: lk_f16_to_f32((const uint16_t *)src, dst, n); break;
    case LK_TYPE_BF16: {
        const uint16_t *s = (const uint16_t *)src;
        for (int64_t i = 0; i < n; i++) dst[i] = lk_bf16_to_float(s[i]);
        break;
    }
    case LK_TYPE_Q4_0: lk_dequantize_q4_0((const lk_block_q4_0 *)src, dst, n / 32); break;
    case LK_TYPE_Q8_0: lk_dequantize_q8_0((const lk_block_q8_0 *)src, dst, n / 32); break;
    case LK_TYPE_Q4_K: lk_dequantize_q4_K((const lk_block_q4_K *)src, dst, n / 256); break;
    case LK_TYPE_Q6_K: lk_dequantize_q6_K((const lk_block_q6_K *)src, dst, n / 256); break;
    case LK_TYPE_Q8_K: lk_dequantize_q8_K((const lk_block_q8_K *)src, dst, n / 256); break;
    default: break;
    }
}

// MARK: - Encoding

static inline int lk_round(float x) { return (int)nearbyintf(x); }

static void lk_quantize_q4_0(const float *x, lk_block_q4_0 *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += 32) {
        // The element of largest magnitude maps to -8 so the full range is used.
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 32; j++) {
            float a = fabsf(x[j]);
            if (a > amax) { amax = a; max = x[j]; }
        }
        float d = max / -8.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = lk_float_to_half(d);
        for (int j = 0; j < 16; j++) {
            int q0 = (int)(x[j] * id + 8.5f);
            int q1 = (int)(x[j + 16] * id + 8.5f);
            q0 = q0 < 0 ? 0 : (q0 > 15 ? 15 : q0);
            q1 = q1 < 0 ? 0 : (q1 > 15 ? 15 : q1);
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void lk_quantize_q8_0(const float *x, lk_block_q8_0 *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += 32) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = lk_float_to_half(d);
        for (int j = 0; j < 32; j++) y[i].qs[j] = (int8_t)lk_round(x[j] * id);
    }
}

static void lk_quantize_q8_K(const float *x, lk_block_q8_K *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += 256) {
        float amax = 0.0f;
        for (int j = 0; j < 256; j++) amax = fmaxf(amax, fabsf(x[j]));
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        y[i].d = amax / 127.0f;
        for (int j = 0; j < 256; j++) {
            int q = lk_round(x[j] * id);
            y[i].qs[j] = (int8_t)(q > 127 ? 127 : (q < -127 ? -127 : q));
        }
        for (int g = 0; g < 16; g++) {
            int sum = 0;
            for (int j = 0; j < 16; j++) sum += y[i].qs[g * 16 + j];
            y[i].bsums[g] = (int16_t)sum;
        }
    }
}

static void lk_quantize_q4_K(const float *x, lk_block_q4_K *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += 256) {
        // Per sub-block affine range [-min, -min + 15 * scale] with min >= 0.
        float scales[8], mins[8];
        float max_scale = 0.0f, max_min = 0.0f;
        for (int j = 0; j < 8; j++) {
            float lo = 0.0f, hi = x[32 * j];
            for (int l = 0; l < 32; l++) {
                lo = fminf(lo, x[32 * j + l]);
                hi = fmaxf(hi, x[32 * j + l]);
            }
            scales[j] = hi > lo ? (hi - lo) / 15.0f : 0.0f;
            mins[j] = -lo;
            max_scale = fmaxf(max_scale, scales[j]);
            max_min = fmaxf(max_min, mins[j]);
        }
        float d = max_scale / 63.0f, dmin = max_min / 63.0f;
        y[i].d = lk_float_to_half(d);
        y[i].dmin = lk_float_to_half(dmin);
        float dh = lk_half_to_float(y[i].d), dminh = lk_half_to_float(y[i].dmin);
        uint8_t sc[8], mn[8];
        for (int j = 0; j < 8; j++) {
            int s = dh > 0.0f ? lk_round(scales[j] / dh) : 0;
            int m = dminh > 0.0f ? (int)ceilf(mins[j] / dminh) : 0;
            sc[j] = (uint8_t)(s > 63 ? 63 : s);
            mn[j] = (uint8_t)(m > 63 ? 63 : m);
        }
        for (int j = 0; j < 4; j++) {
            y[i].scales[j] = (uint8_t)((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
            y[i].scales[j + 4] = (uint8_t)((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
            y[i].scales[j + 8] = (uint8_t)((sc[j + 4] & 0xf) | ((mn[j + 4] & 0xf) << 4));
        }
        uint8_t q[256];
        for (int j = 0; j < 8; j++) {
            float step = dh * sc[j], offset = dminh * mn[j];
            float istep = step > 0.0f ? 1.0f / step : 0.0f;
            for (int l = 0; l < 32; l++) {
                int v = lk_round((x[32 * j + l] + offset) * istep);
                q[32 * j + l] = (uint8_t)(v < 0 ? 0 : (v > 15 ? 15 : v));
            }
        }
        for (int chunk = 0; chunk < 4; chunk++) {
            for (int l = 0; l < 32; l++) {
                y[i].qs[32 * chunk + l] = (uint8_t)(q[64 * chunk + l] | (q[64 * chunk + 32 + l] << 4));
            }
        }
    }
}

static void lk_quantize_q6_K(const float *x, lk_block_q6_K *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += 256) {
        // Per sub-block of 16 the element of largest magnitude maps to -32.
        float scales[16];
        float max_abs_scale = 0.0f;
        for (int j = 0; j < 16; j++) {
            float amax = 0.0f, max = 0.0f;
            for (int l = 0; l < 16; l++) {
                float a = fabsf(x[16 * j + l]);
                if (a > amax) { amax = a; max = x[16 * j + l]; }
            }
            scales[j] = max / -32.0f;
            max_abs_scale = fmaxf(max_abs_scale, fabsf(scales[j]));
        }
        float d = max_abs_scale / 127.0f;
        y[i].d = lk_float_to_half(d);
        float dh = lk_half_to_float(y[i].d);
        uint8_t q[256];
        for (int j = 0; j < 16; j++) {
            int s = dh > 0.0f ? lk_round(scales[j] / dh) : 0;
            s = s > 127 ? 127 : (s < -127 ? -127 : s);
            y[i].scales[j] = (int8_t)s;
            float step = dh * (float)s;
            float istep = step != 0.0f ? 1.0f / step : 0.0f;
            for (int l = 0; l < 16; l++) {
                int v = lk_round(x[16 * j + l] * istep);
                v = v < -32 ? -32 : (v > 31 ? 31 : v);
                q[16 * j + l] = (uint8_t)(v + 32);
            }
        }
        for (int half = 0; half < 2; half++) {
            uint8_t *ql = y[i].ql + 64 * half;
            uint8_t *qh = y[i].qh + 32 * half;
            const uint8_t *qq = q + 128 * half;
            for (int l = 0; l < 32; l++) {
                uint8_t q1 = qq[l], q2 = qq[l + 32], q3 = qq[l + 64], q4 = qq[l + 96];
                ql[l] = (uint8_t)((q1 & 0xf) | ((q3 & 0xf) << 4));
                ql[l + 32] = (uint8_t)((q2 & 0xf) | ((q4 & 0xf) << 4));
                qh[l] = (uint8_t)((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
            }
        }
    }
}

void lk_quantize_row(int type, const float *src, void *dst, int64_t n) {
    switch (type) {
    case LK_TYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case LK_TYPE_F16: lk_f32_to_f16(src, (uint16_t *)dst, n); break;
    case LK_TYPE_BF16: {
        uint16_t *d = (uint16_t *)dst;
        for (int64_t i = 0; i < n; i++) d[i] = lk_float_to_bf16(src[i]);
        break;
    }
    case LK_TYPE_Q4_0: lk_quantize_q4_0(src, (lk_block_q4_0 *)dst, n / 32); break;
    case LK_TYPE_Q8_0: lk_quantize_q8_0(src, (lk_block_q8_0 *)dst, n / 32); break;
    case LK_TYPE_Q4_K: lk_quantize_q4_K(src, (lk_block_q4_K *)dst, n / 256); break;
    case LK_TYPE_Q6_K: lk_quantize_q6_K(src, (lk_block_q6_K *)dst, n / 256); break;
    case LK_TYPE_Q8_K: lk_quantize_q8_K(src, (lk_block_q8_K *)dst, n / 256); break;
    default: break;
    }
}

// MARK: - Activations

size_t lk_act_row_size(int weight_type, int64_t n) {
    switch (weight_type) {
    case LK_TYPE_F32: case LK_TYPE_F16: case LK_TYPE_BF16: return (size_t)n * sizeof(float);
    case LK_TYPE_Q4_0: case LK_TYPE_Q8_0: return lk_q8_act_size(n);
    case LK_TYPE_Q4_K: case LK_TYPE_Q6_K: return lk_row_size(LK_TYPE_Q8_K, n);
    default: return 0;
    }
}

void lk_quantize_activations(int weight_type, const float *x, void *dst, int64_t n) {
    switch (weight_type) {
    case LK_TYPE_F32: case LK_TYPE_F16: case LK_TYPE_BF16:
        memcpy(dst, x, (size_t)n * sizeof(float));
        break;
    case LK_TYPE_Q4_0: case LK_TYPE_Q8_0: {
        const lk_impl *impl = lk_impl_current();
        if (impl->quantize_q8_act) {
            impl->quantize_q8_act(x, dst, n);
            break;
        }
        int64_t nb = n / 32;
        lk_block_q8_0 *blocks = (lk_block_q8_0 *)dst;
        lk_quantize_q8_0(x, blocks, nb);
        lk_q8_act_clear_padding(dst, n);
        for (int64_t i = 0; i < nb; i++) {
            int32_t sum = 0;
            for (int j = 0; j < 32; j++) sum += blocks[i].qs[j];
            lk_q8_act_place(dst, n, i, &blocks[i], sum);
        }
        break;
    }
    case LK_TYPE_Q4_K: case LK_TYPE_Q6_K:
        lk_quantize_q8_K(x, (lk_block_q8_K *)dst, n / 256);
        break;
    default: break;
    }
}

// MARK: - Products and vector helpers

int64_t lk_matmul_row_tile(int type) {
    (void)type;
    return 16;
}

void lk_matmul(int type, const void *W, size_t w_row_stride, int64_t ncols,
               const void *xq, size_t xq_row_stride, int64_t nbatch,
               float *out, int64_t out_row_stride,
               int64_t row_begin, int64_t row_end) {
    if (row_end <= row_begin || nbatch <= 0) return;
    const lk_impl *impl = lk_impl_current();
    lk_matmul_fn fn = 0;
    switch (type) {
    case LK_TYPE_F32: fn = impl->matmul_f32; break;
    case LK_TYPE_F16: fn = impl->matmul_f16; break;
    case LK_TYPE_BF16: fn = impl->matmul_bf16; break;
    case LK_TYPE_Q4_0: fn = impl->matmul_q4_0; break;
    case LK_TYPE_Q8_0: fn = impl->matmul_q8_0; break;
    case LK_TYPE_Q4_K: fn = impl->matmul_q4_K; break;
    case LK_TYPE_Q6_K: fn = impl->matmul_q6_K; break;
    default: return;
    }
    fn(W, w_row_stride, ncols, xq, xq_row_stride, nbatch, out, out_row_stride, row_begin, row_end);
}

// MARK: - Q4_0 and Q8_0 in groups of eight rows

size_t lk_x8_size(int type, int64_t rows, int64_t ncols) {
    if (type != LK_TYPE_Q4_0 && type != LK_TYPE_Q8_0) return 0;
    return lk_row_size(type, ncols) * (size_t)rows;
}

int lk_x8_pack(int type, const void *W, size_t ws, int64_t rows, int64_t ncols, void *dst) {
    if (type != LK_TYPE_Q4_0 && type != LK_TYPE_Q8_0) return -1;
    if (rows < 0 || rows % 8 != 0 || ncols <= 0 || ncols % 32 != 0) return -1;
    const int64_t nb = ncols / 32;
    // Both block types are a half scale followed by the quants (16 or 32 bytes).
    const size_t block = type == LK_TYPE_Q4_0 ? sizeof(lk_block_q4_0) : sizeof(lk_block_q8_0);
    const int words = type == LK_TYPE_Q4_0 ? 4 : 8;
    uint8_t *out = (uint8_t *)dst;
    for (int64_t g = 0; g < rows / 8; g++) {
        for (int64_t i = 0; i < nb; i++, out += 8 * block) {
            for (int j = 0; j < 8; j++) {
                const uint8_t *x = (const uint8_t *)W + (size_t)(8 * g + j) * ws + (size_t)i * block;
                memcpy(out + 2 * j, x, 2);
                for (int k = 0; k < words; k++) memcpy(out + 16 + 32 * k + 4 * j, x + 2 + 4 * k, 4);
            }
        }
    }
    return 0;
}

// The portable product on repacked rows: per output, fma over blocks of the exact integer dot
// product times the two scales, in block order (the order of the AVX2 product).
static inline void matmul_x8_portable(int q4, const void *P, int64_t n, const void *xq, size_t xs, int64_t nbatch,
                                      float *out, int64_t os, int64_t row_begin, int64_t row_end) {
    const int64_t nb = n / 32;
    const size_t block = q4 ? 144 : 272;
    for (int64_t r = row_begin; r < row_end; r++) {
        const uint8_t *group = (const uint8_t *)P + (size_t)(r / 8) * (size_t)nb * block;
        const int j = (int)(r % 8);
        for (int64_t b = 0; b < nbatch; b++) {
            const lk_block_q8_0 *y = (const lk_block_q8_0 *)((const uint8_t *)xq + (size_t)b * xs);
            float acc = 0;
            for (int64_t i = 0; i < nb; i++) {
                const uint8_t *blk = group + (size_t)i * block;
                uint16_t d;
                memcpy(&d, blk + 2 * j, 2);
                int32_t dot = 0;
                if (q4) {
                    for (int e = 0; e < 16; e++) {
                        const uint8_t q = blk[16 + 32 * (e / 4) + 4 * j + e % 4];
                        dot += ((q & 0x0f) - 8) * y[i].qs[e] + ((q >> 4) - 8) * y[i].qs[e + 16];
                    }
                } else {
                    for (int e = 0; e < 32; e++) dot += (int8_t)blk[16 + 32 * (e / 4) + 4 * j + e % 4] * y[i].qs[e];
                }
                acc = fmaf((float)dot, lk_half_to_float(d) * lk_half_to_float(y[i].d), acc);
            }
            out[b * os + r] = acc;
        }
    }
}

static void matmul_q4_0_x8_portable(const void *P, size_t unused, int64_t n, const void *xq, size_t xs, int64_t nbatch,
                                    float *out, int64_t os, int64_t row_begin, int64_t row_end) {
    (void)unused;
    matmul_x8_portable(1, P, n, xq, xs, nbatch, out, os, row_begin, row_end);
}

static void matmul_q8_0_x8_portable(const void *P, size_t unused, int64_t n, const void *xq, size_t xs, int64_t nbatch,
                                    float *out, int64_t os, int64_t row_begin, int64_t row_end) {
    (void)unused;
    matmul_x8_portable(0, P, n, xq, xs, nbatch, out, os, row_begin, row_end);
}

void lk_matmul_x8(int type, const void *P, int64_t ncols, const void *xq, size_t xs, int64_t nbatch,
                  float *out, int64_t os, int64_t row_begin, int64_t row_end) {
    if (row_end <= row_begin || nbatch <= 0) return;
    if (type != LK_TYPE_Q4_0 && type != LK_TYPE_Q8_0) return;
    const int q4 = type == LK_TYPE_Q4_0;
    const lk_impl *impl = lk_impl_current();
    lk_matmul_fn fn = q4 ? impl->matmul_q4_0_x8 : impl->matmul_q8_0_x8;
#if defined(__x86_64__)
    // Machines with AVX-512 run the AVX2 product: the layout is made for it.
    if (!fn && lk_isa_level() >= LK_ISA_AVX2) fn = q4 ? lk_impl_avx2.matmul_q4_0_x8 : lk_impl_avx2.matmul_q8_0_x8;
#endif
    if (!fn) fn = q4 ? matmul_q4_0_x8_portable : matmul_q8_0_x8_portable;
    fn(P, 0, ncols, xq, xs, nbatch, out, os, row_begin, row_end);
}

float lk_dot_f32(const float *a, const float *b, int64_t n) { return lk_impl_current()->dot_f32(a, b, n); }
void lk_axpy_f32(int64_t n, float a, const float *x, float *y) { lk_impl_current()->axpy_f32(n, a, x, y); }
float lk_dot_f16_f32(const uint16_t *a, const float *b, int64_t n) { return lk_impl_current()->dot_f16_f32(a, b, n); }
void lk_axpy_f16(int64_t n, float a, const uint16_t *x, float *y) { lk_impl_current()->axpy_f16(n, a, x, y); }
void lk_f16_to_f32(const uint16_t *src, float *dst, int64_t n) { lk_impl_current()->f16_to_f32(src, dst, n); }
void lk_f32_to_f16(const float *src, uint16_t *dst, int64_t n) { lk_impl_current()->f32_to_f16(src, dst, n); }

void lk_swiglu(float *gate, const float *up, int64_t n) {
    const lk_impl *impl = lk_impl_current();
    if (impl->swiglu) {
        impl->swiglu(gate, up, n);
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        const float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

// MARK: - Attention

// The generic loop over a key/value row type: scores one cached row at a time for every
// query head (the row is read once from memory), a softmax per head, then the weighted
// values one row at a time for every head, so each head's output receives the rows in
// position order.
#define LK_ATTENTION_LOOP(T, DOT, AXPY)                                                                 \
    do {                                                                                                \
        const int64_t nq = nkv * group;                                                                 \
        for (int64_t p = 0; p < npos; p++) {                                                            \
            for (int64_t h = 0; h < nq; h++) {                                                          \
                const T *kp = k + p * kv_stride + h / group * head_dim;                                 \
                scores[h * npos + p] = (DOT) * scale;                                                   \
            }                                                                                           \
        }                                                                                               \
        for (int64_t h = 0; h < nq; h++) {                                                              \
            lk_softmax(scores + h * npos, npos);                                                        \
            memset(out + h * out_stride, 0, (size_t)head_dim * sizeof(float));                          \
        }                                                                                               \
        for (int64_t p = 0; p < npos; p++) {                                                            \
            for (int64_t h = 0; h < nq; h++) {                                                          \
                const T *vp = v + p * kv_stride + h / group * head_dim;                                 \
                AXPY(head_dim, scores[h * npos + p], vp, out + h * out_stride);                         \
            }                                                                                           \
        }                                                                                               \
    } while (0)

void lk_attention(const float *q, int64_t q_stride, int64_t nkv, int64_t group, const float *k, const float *v,
                  int64_t kv_stride, int64_t head_dim, int64_t npos, float scale, float *scores, float *out,
                  int64_t out_stride) {
    const lk_impl *impl = lk_impl_current();
    if (impl->attention && head_dim % 32 == 0 && head_dim <= 256) {
        impl->attention(q, q_stride, nkv, group, k, v, kv_stride, head_dim, npos, scale, scores, out, out_stride);
        return;
    }
    LK_ATTENTION_LOOP(float, impl->dot_f32(q + h * q_stride, kp, head_dim), impl->axpy_f32);
}

void lk_attention_f16(const float *q, int64_t q_stride, int64_t nkv, int64_t group, const uint16_t *k,
                      const uint16_t *v, int64_t kv_stride, int64_t head_dim, int64_t npos, float scale,
                      float *scores, float *out, int64_t out_stride) {
    const lk_impl *impl = lk_impl_current();
    if (impl->attention_f16 && head_dim % 32 == 0 && head_dim <= 256) {
        impl->attention_f16(q, q_stride, nkv, group, k, v, kv_stride, head_dim, npos, scale, scores, out,
                            out_stride);
        return;
    }
    LK_ATTENTION_LOOP(uint16_t, impl->dot_f16_f32(kp, q + h * q_stride, head_dim), impl->axpy_f16);
}

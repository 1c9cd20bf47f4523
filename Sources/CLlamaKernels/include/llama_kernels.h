#pragma once
// Numeric kernels for quantized Llama inference on the CPU.
//
// Tensor element encodings are named by their GGML type ids and use the exact
// GGML block layouts, so weights can be used in place from a GGUF file:
//
//   F32  (0)   4-byte IEEE float
//   F16  (1)   2-byte IEEE half
//   Q4_0 (2)   32 elements: f16 d, 16 bytes of nibbles; element j (j < 16) is the
//              low nibble of byte j, element j + 16 its high nibble; value (q - 8) * d
//   Q8_0 (8)   32 elements: f16 d, 32 int8; value q * d
//   Q4_K (12)  256 elements: f16 d, f16 dmin, 12 bytes of packed 6-bit scales and
//              mins, 128 bytes of nibbles; value d * scale * q - dmin * min
//   Q6_K (14)  256 elements: 128 bytes low nibbles, 64 bytes high 2-bit pairs,
//              16 int8 scales, f16 d; value d * scale * (q - 32)
//   Q8_K (15)  256 elements: f32 d, 256 int8, 16 int16 sums of groups of 16
//   BF16 (30)  2-byte brain float
//
// Matrix products multiply a weight matrix (one row per output feature) with a
// batch of activation rows. The activations are first encoded with
// lk_quantize_activations into the weight type's vec-dot encoding (Q8_0 for
// Q4_0 and Q8_0 weights, Q8_K for Q4_K and Q6_K, F32 for F32, F16 and BF16).
// An encoded activation row starts with the plain GGML row of that type
// (lk_row_size(lk_vec_dot_type(t), n) bytes, readable with lk_dequantize_row)
// and may be followed by auxiliary data the kernels use; lk_act_row_size gives
// the full size.
//
// Each routine picks an instruction-set path at run time (AVX-512 with VNNI,
// AVX2 with FMA and F16C, or portable scalar code). All routines are
// allocation-free and thread-safe; the only global state is the chosen path.

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Type ids

enum {
    LK_TYPE_F32 = 0,
    LK_TYPE_F16 = 1,
    LK_TYPE_Q4_0 = 2,
    LK_TYPE_Q8_0 = 8,
    LK_TYPE_Q4_K = 12,
    LK_TYPE_Q6_K = 14,
    LK_TYPE_Q8_K = 15,
    LK_TYPE_BF16 = 30,
};

/// Elements per block of `type` (1 for float types), or 0 if unsupported.
int64_t lk_block_elements(int type);

/// Bytes of one row of `n` elements of `type` (n must be a multiple of the
/// block size), or 0 if the type is unsupported.
size_t lk_row_size(int type, int64_t n);

// MARK: - Encoding and decoding

/// Decodes `n` elements of `type` (F32, F16, BF16, Q4_0, Q8_0, Q4_K, Q6_K, Q8_K).
void lk_dequantize_row(int type, const void *src, float *dst, int64_t n);

/// Encodes `n` floats as `type` (F32, F16, BF16, Q4_0, Q8_0, Q4_K, Q6_K, Q8_K).
void lk_quantize_row(int type, const float *src, void *dst, int64_t n);

/// The activation encoding used with weights of `weight_type`, or -1.
int lk_vec_dot_type(int weight_type);

/// Bytes of one encoded activation row of `n` elements for `weight_type`
/// (the vec-dot row followed by the kernels' auxiliary data).
size_t lk_act_row_size(int weight_type, int64_t n);

/// Encodes one activation row for products with weights of `weight_type`.
/// `dst` must hold lk_act_row_size(weight_type, n) bytes.
void lk_quantize_activations(int weight_type, const float *x, void *dst, int64_t n);

// MARK: - Matrix products

/// Row tile of the product kernels: splitting rows among threads at multiples
/// of this keeps every thread on the fast path.
int64_t lk_matmul_row_tile(int type);

/// out[b * out_row_stride + r] = dot(row r of W, activation row b) for r in
/// [row_begin, row_end) and b in [0, nbatch).
///
/// W: rows of `ncols` elements of `type`, `w_row_stride` bytes apart.
/// xq: activation rows encoded by lk_quantize_activations(type, ..., ncols),
/// `xq_row_stride` bytes apart. `ncols` must be a multiple of the block size.
///
/// For a given instruction-set level every output element is bitwise the same
/// whatever `nbatch`, the position of the activation row in the batch, and the
/// row range it is computed in: batching requests or splitting rows among
/// threads never changes a result.
void lk_matmul(int type, const void *W, size_t w_row_stride, int64_t ncols,
               const void *xq, size_t xq_row_stride, int64_t nbatch,
               float *out, int64_t out_row_stride,
               int64_t row_begin, int64_t row_end);

// MARK: - Q4_0 and Q8_0 repacked in groups of eight rows

/// Bytes of a matrix of `rows` x `ncols` of `type` (Q4_0 or Q8_0) repacked by lk_x8_pack
/// (the original's size), or 0 for another type.
size_t lk_x8_size(int type, int64_t rows, int64_t ncols);
/// Repacks Q4_0 or Q8_0 rows (`w_row_stride` bytes apart) into groups of eight rows: for each
/// group and block, the eight rows' fp16 scales (16 bytes), then four (Q4_0) or eight (Q8_0)
/// 32-byte words in which 32-bit lane j holds bytes 4k..4k+3 of row j's quants: the order the
/// AVX2 product transposes a block into on the fly, stored once. Same size as the original.
/// Returns 0, or -1 for another type or when `rows` is not a multiple of 8 or `ncols` of 32.
int lk_x8_pack(int type, const void *W, size_t w_row_stride, int64_t rows, int64_t ncols, void *dst);
/// lk_matmul for weights repacked by lk_x8_pack (`row_begin` and `row_end` multiples of 8):
/// at the AVX2 level and above bitwise the result of lk_matmul's AVX2 product on the
/// original rows; otherwise a portable loop in the same order. Another type: nothing.
void lk_matmul_x8(int type, const void *P, int64_t ncols, const void *xq, size_t xq_row_stride, int64_t nbatch,
                  float *out, int64_t out_row_stride, int64_t row_begin, int64_t row_end);

// MARK: - Vector helpers

/// Sum of a[i] * b[i].
float lk_dot_f32(const float *a, const float *b, int64_t n);
/// y[i] += a * x[i].
void lk_axpy_f32(int64_t n, float a, const float *x, float *y);
/// Sum of half(a[i]) * b[i].
float lk_dot_f16_f32(const uint16_t *a, const float *b, int64_t n);
/// y[i] += a * half(x[i]).
void lk_axpy_f16(int64_t n, float a, const uint16_t *x, float *y);
/// Half to float.
void lk_f16_to_f32(const uint16_t *src, float *dst, int64_t n);
/// Float to half, rounding to nearest even.
void lk_f32_to_f16(const float *src, uint16_t *dst, int64_t n);
/// The SwiGLU gate in place: gate[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + e^-g).
/// Within a few units in the last place of the exact value at every level (the AVX-512
/// routine evaluates e^-g with its own polynomial, not the C library's expf).
void lk_swiglu(float *gate, const float *up, int64_t n);

// MARK: - Attention

/// Causal attention over positions 0..<npos of `nkv` key/value heads that lie side
/// by side in each cached row (head g at k + g * head_dim), each shared by `group`
/// query heads: for query head j < nkv * group, with q_j = q + j * q_stride and
/// g = j / group,
///   w_j = softmax(scale * (q_j . k_p,g) for each p),
///   out + j * out_stride = sum over p of w_j[p] * v_p,g,
/// where k_p,g = k + p * kv_stride + g * head_dim (and v likewise) hold `head_dim`
/// floats. `scores` is scratch for nkv * group * npos floats. Each head's result is
/// bitwise the same whichever other heads are computed with it.
void lk_attention(const float *q, int64_t q_stride, int64_t nkv, int64_t group, const float *k, const float *v,
                  int64_t kv_stride, int64_t head_dim, int64_t npos, float scale, float *scores, float *out,
                  int64_t out_stride);
/// lk_attention over keys and values stored as IEEE halves (an f16 KV cache):
/// the same sums with each cached element widened to float as it is read.
void lk_attention_f16(const float *q, int64_t q_stride, int64_t nkv, int64_t group, const uint16_t *k,
                      const uint16_t *v, int64_t kv_stride, int64_t head_dim, int64_t npos, float scale,
                      float *scores, float *out, int64_t out_stride);

// MARK: - Instruction-set selection

enum {
    LK_ISA_SCALAR = 0,
    LK_ISA_AVX2 = 1,
    LK_ISA_AVX512 = 2,
};

/// Best level this CPU supports.
int lk_isa_max_level(void);
/// Level in use.
int lk_isa_level(void);
/// Name of the level in use ("scalar", "avx2", "avx512").
const char *lk_isa_name(void);
/// Selects a level (clamped to what the CPU supports) for the calling thread
/// only; other threads keep the best level. For tests and benchmarks.
void lk_force_isa(int level);

/// CPU features the kernels and the wire code look for (one probe for the whole program).
enum {
    LK_CPU_SSE42 = 1 << 0,
    LK_CPU_AVX = 1 << 1,
    LK_CPU_AVX2 = 1 << 2,
    LK_CPU_FMA = 1 << 3,
    LK_CPU_F16C = 1 << 4,
    LK_CPU_AVX512F = 1 << 5,
    LK_CPU_AVX512BW = 1 << 6,
    LK_CPU_AVX512VL = 1 << 7,
    LK_CPU_AVX512DQ = 1 << 8,
    LK_CPU_AVX512VNNI = 1 << 9,
};
/// The LK_CPU_* bits this CPU (and its operating system) supports.
int lk_cpu_features(void);
/// The same as text, e.g. "sse4.2 avx avx2 fma f16c avx512f ...".
const char *lk_cpu_feature_names(void);

/// A pause hint for spin-wait loops.
void lk_cpu_relax(void);

#ifdef __cplusplus
}
#endif

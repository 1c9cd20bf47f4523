#include "cluster_wire_support.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define LCW_X86 1
#include <cpuid.h>
#include <immintrin.h>
#else
#define LCW_X86 0
#endif

// MARK: - CPU features

static int lcw_has_f16c = 0;
static int lcw_has_sse42 = 0;
static uint32_t lcw_crc_table[256];

static void lcw_build_crc_table(void) {
    for (uint32_t byte = 0; byte < 256; byte++) {
        uint32_t crc = byte;
        for (int bit = 0; bit < 8; bit++) {
            crc = (crc & 1u) ? (crc >> 1) ^ 0x82F63B78u : (crc >> 1);
        }
        lcw_crc_table[byte] = crc;
    }
}

__attribute__((constructor))
static void lcw_detect_features(void) {
    lcw_build_crc_table();
#if LCW_X86
    unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return;
    lcw_has_sse42 = (ecx >> 20) & 1u;
    int f16c = (ecx >> 29) & 1u;
    int avx = (ecx >> 28) & 1u;
    int osxsave = (ecx >> 27) & 1u;
    if (f16c && avx && osxsave) {
        /* The OS must save the YMM state for 256-bit instructions to be usable. */
        unsigned int xcr0_low, xcr0_high;
        __asm__ volatile("xgetbv" : "=a"(xcr0_low), "=d"(xcr0_high) : "c"(0));
        (void)xcr0_high;
        lcw_has_f16c = (xcr0_low & 0x6u) == 0x6u;
    }
#endif
}

int lcw_f16c_available(void) { return lcw_has_f16c; }
int lcw_crc32c_hardware_available(void) { return lcw_has_sse42; }

// MARK: - Half precision, portable

static inline uint32_t lcw_bits_of(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    return bits;
}

static inline float lcw_float_of(uint32_t bits) {
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

static inline uint16_t lcw_half_from_float(float value) {
    const uint32_t bits = lcw_bits_of(value);
    const uint16_t sign = (uint16_t)((bits >> 16) & 0x8000u);
    const uint32_t magnitude = bits & 0x7FFFFFFFu;

    if (magnitude >= 0x47800000u) {
        /* |value| >= 2^16, infinity or NaN. */
        if (magnitude > 0x7F800000u) {
            /* NaN: keep it quiet and keep the top payload bits. */
            return (uint16_t)(sign | 0x7E00u | ((magnitude >> 13) & 0x3FFu));
        }
        return (uint16_t)(sign | 0x7C00u);
    }
    if (magnitude < 0x38800000u) {
        /* Below the smallest normal half (2^-14): adding 0.5 puts the value's
         * multiple of 2^-24 (the subnormal half quantum, also the ulp of 0.5)
         * in the low mantissa bits, rounded to nearest even by the FPU. */
        const float shifted = lcw_float_of(magnitude) + 0.5f;
        return (uint16_t)(sign | (uint16_t)(lcw_bits_of(shifted) - 0x3F000000u));
    }
    /* Normal half: rebias the exponent from 127 to 15 and round the 13
     * dropped mantissa bits to nearest even; a carry into the exponent is the
     * correct result (up to infinity for values in [65520, 65536)). */
    const uint32_t odd = (magnitude >> 13) & 1u;
    const uint32_t rebiased = magnitude - (112u << 23) + 0x0FFFu + odd;
    return (uint16_t)(sign | (uint16_t)(rebiased >> 13));
}

static inline float lcw_float_from_half(uint16_t half) {
    const uint32_t sign = (uint32_t)(half & 0x8000u) << 16;
    const uint32_t exponent = (half >> 10) & 0x1Fu;
    const uint32_t mantissa = half & 0x3FFu;
    if (exponent == 0x1Fu) {
        /* Infinity or NaN (payload kept, NaN made quiet). */
        uint32_t bits = sign | 0x7F800000u | (mantissa << 13);
        if (mantissa != 0) bits |= 0x00400000u;
        return lcw_float_of(bits);
    }
    if (exponent == 0) {
        /* Zero or subnormal: exactly mantissa * 2^-24. */
        const float magnitude = (float)mantissa * 5.9604644775390625e-8f;
        return sign ? -magnitude : magnitude;
    }
    return lcw_float_of(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

void lcw_f32_to_f16_portable(const float *source, uint16_t *destination, size_t count) {
    for (size_t i = 0; i < count; i++) destination[i] = lcw_half_from_float(source[i]);
}

void lcw_f16_to_f32_portable(const uint16_t *source, float *destination, size_t count) {
    for (size_t i = 0; i < count; i++) destination[i] = lcw_float_from_half(source[i]);
}

// MARK: - Half precision, F16C

#if LCW_X86
__attribute__((target("avx,f16c")))
static void lcw_f32_to_f16_f16c(const float *source, uint16_t *destination, size_t count) {
    size_t i = 0;
    for (; i + 32 <= count; i += 32) {
        const __m256 a = _mm256_loadu_ps(source + i);
        const __m256 b = _mm256_loadu_ps(source + i + 8);
        const __m256 c = _mm256_loadu_ps(source + i + 16);
        const __m256 d = _mm256_loadu_ps(source + i + 24);
        _mm_storeu_si128((__m128i *)(destination + i), _mm256_cvtps_ph(a, _MM_FROUND_TO_NEAREST_INT));
        _mm_storeu_si128((__m128i *)(destination + i + 8), _mm256_cvtps_ph(b, _MM_FROUND_TO_NEAREST_INT));
        _mm_storeu_si128((__m128i *)(destination + i + 16), _mm256_cvtps_ph(c, _MM_FROUND_TO_NEAREST_INT));
        _mm_storeu_si128((__m128i *)(destination + i + 24), _mm256_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT));
    }
    for (; i + 8 <= count; i += 8) {
        const __m256 a = _mm256_loadu_ps(source + i);
        _mm_storeu_si128((__m128i *)(destination + i), _mm256_cvtps_ph(a, _MM_FROUND_TO_NEAREST_INT));
    }
    for (; i < count; i++) {
        const __m128 a = _mm_set_ss(source[i]);
        destination[i] = (uint16_t)_mm_extract_epi16(_mm_cvtps_ph(a, _MM_FROUND_TO_NEAREST_INT), 0);
    }
}

__attribute__((target("avx,f16c")))
static void lcw_f16_to_f32_f16c(const uint16_t *source, float *destination, size_t count) {
    size_t i = 0;
    for (; i + 32 <= count; i += 32) {
        const __m128i a = _mm_loadu_si128((const __m128i *)(source + i));
        const __m128i b = _mm_loadu_si128((const __m128i *)(source + i + 8));
        const __m128i c = _mm_loadu_si128((const __m128i *)(source + i + 16));
        const __m128i d = _mm_loadu_si128((const __m128i *)(source + i + 24));
        _mm256_storeu_ps(destination + i, _mm256_cvtph_ps(a));
        _mm256_storeu_ps(destination + i + 8, _mm256_cvtph_ps(b));
        _mm256_storeu_ps(destination + i + 16, _mm256_cvtph_ps(c));
        _mm256_storeu_ps(destination + i + 24, _mm256_cvtph_ps(d));
    }
    for (; i + 8 <= count; i += 8) {
        const __m128i a = _mm_loadu_si128((const __m128i *)(source + i));
        _mm256_storeu_ps(destination + i, _mm256_cvtph_ps(a));
    }
    for (; i < count; i++) {
        const __m128i a = _mm_cvtsi32_si128(source[i]);
        destination[i] = _mm_cvtss_f32(_mm_cvtph_ps(a));
    }
}
#endif

void lcw_f32_to_f16(const float *source, uint16_t *destination, size_t count) {
#if LCW_X86
    if (lcw_has_f16c) {
        lcw_f32_to_f16_f16c(source, destination, count);
        return;
    }
#endif
    lcw_f32_to_f16_portable(source, destination, count);
}

void lcw_f16_to_f32(const uint16_t *source, float *destination, size_t count) {
#if LCW_X86
    if (lcw_has_f16c) {
        lcw_f16_to_f32_f16c(source, destination, count);
        return;
    }
#endif
    lcw_f16_to_f32_portable(source, destination, count);
}

// MARK: - CRC-32C

uint32_t lcw_crc32c_portable(uint32_t crc, const void *data, size_t length) {
    const uint8_t *bytes = (const uint8_t *)data;
    uint32_t state = ~crc;
    for (size_t i = 0; i < length; i++) {
        state = lcw_crc_table[(state ^ bytes[i]) & 0xFFu] ^ (state >> 8);
    }
    return ~state;
}

#if LCW_X86
__attribute__((target("sse4.2")))
static uint32_t lcw_crc32c_sse42(uint32_t crc, const void *data, size_t length) {
    const uint8_t *bytes = (const uint8_t *)data;
    uint32_t state = ~crc;
    while (length > 0 && ((uintptr_t)bytes & 7u) != 0) {
        state = _mm_crc32_u8(state, *bytes++);
        length--;
    }
#if defined(__x86_64__)
    uint64_t wide = state;
    while (length >= 8) {
        uint64_t word;
        memcpy(&word, bytes, sizeof word);
        wide = _mm_crc32_u64(wide, word);
        bytes += 8;
        length -= 8;
    }
    state = (uint32_t)wide;
#endif
    while (length > 0) {
        state = _mm_crc32_u8(state, *bytes++);
        length--;
    }
    return ~state;
}
#endif

uint32_t lcw_crc32c(uint32_t crc, const void *data, size_t length) {
#if LCW_X86
    if (lcw_has_sse42) return lcw_crc32c_sse42(crc, data, length);
#endif
    return lcw_crc32c_portable(crc, data, length);
}

// MARK: - Arena allocator

/* A block that did not fit the main buffer; its data follows the header. */
typedef struct LCWSpillBlock {
    struct LCWSpillBlock *next;
    size_t size;
} LCWSpillBlock;

struct LCWArena {
    ProtobufCAllocator allocator;
    unsigned char *base;
    size_t capacity;
    size_t used;
    LCWSpillBlock *spilled;
    size_t spilled_bytes;
    size_t spill_count;
};

enum { LCW_ARENA_ALIGNMENT = 16 };

static void *lcw_arena_alloc(void *context, size_t size) {
    LCWArena *arena = (LCWArena *)context;
    if (size == 0) size = 1;
    const size_t rounded = (size + (LCW_ARENA_ALIGNMENT - 1)) & ~(size_t)(LCW_ARENA_ALIGNMENT - 1);
    if (rounded < size) return NULL;
    if (arena->capacity - arena->used >= rounded) {
        void *pointer = arena->base + arena->used;
        arena->used += rounded;
        return pointer;
    }
    const size_t header = (sizeof(LCWSpillBlock) + (LCW_ARENA_ALIGNMENT - 1)) & ~(size_t)(LCW_ARENA_ALIGNMENT - 1);
    if (rounded > SIZE_MAX - header) return NULL;
    LCWSpillBlock *block = (LCWSpillBlock *)malloc(header + rounded);
    if (block == NULL) return NULL;
    block->next = arena->spilled;
    block->size = rounded;
    arena->spilled = block;
    arena->spilled_bytes += rounded;
    arena->spill_count += 1;
    return (unsigned char *)block + header;
}

static void lcw_arena_free(void *context, void *pointer) {
    (void)context;
    (void)pointer;
}

LCWArena *lcw_arena_create(size_t initial_capacity) {
    LCWArena *arena = (LCWArena *)calloc(1, sizeof(LCWArena));
    if (arena == NULL) return NULL;
    arena->allocator.alloc = lcw_arena_alloc;
    arena->allocator.free = lcw_arena_free;
    arena->allocator.allocator_data = arena;
    if (initial_capacity > 0) {
        arena->base = (unsigned char *)malloc(initial_capacity);
        if (arena->base != NULL) arena->capacity = initial_capacity;
    }
    return arena;
}

static void lcw_arena_release_spilled(LCWArena *arena) {
    LCWSpillBlock *block = arena->spilled;
    while (block != NULL) {
        LCWSpillBlock *next = block->next;
        free(block);
        block = next;
    }
    arena->spilled = NULL;
    arena->spilled_bytes = 0;
}

void lcw_arena_reset(LCWArena *arena) {
    if (arena->spilled != NULL) {
        /* Grow the main block to hold everything the last use needed, with
         * room for per-allocation rounding, so the same load fits next time. */
        size_t wanted = arena->used + arena->spilled_bytes;
        wanted += wanted / 4 + 256;
        if (wanted < arena->capacity * 2) wanted = arena->capacity * 2;
        unsigned char *grown = (unsigned char *)malloc(wanted);
        if (grown != NULL) {
            free(arena->base);
            arena->base = grown;
            arena->capacity = wanted;
        }
        lcw_arena_release_spilled(arena);
    }
    arena->used = 0;
}

void lcw_arena_destroy(LCWArena *arena) {
    if (arena == NULL) return;
    lcw_arena_release_spilled(arena);
    free(arena->base);
    free(arena);
}

ProtobufCAllocator *lcw_arena_allocator(LCWArena *arena) { return &arena->allocator; }

size_t lcw_arena_capacity(const LCWArena *arena) { return arena->capacity; }

size_t lcw_arena_spill_count(const LCWArena *arena) { return arena->spill_count; }

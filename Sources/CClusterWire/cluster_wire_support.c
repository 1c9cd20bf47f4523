#include "cluster_wire_support.h"
#include "llama_kernels.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define LCW_X86 1
#include <cpuid.h>
#include <immintrin.h>
#else
#define LCW_X86 0
#endif

// MARK: - CPU features (from the kernels' one probe)

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
    lcw_has_sse42 = (lk_cpu_features() & LK_CPU_SSE42) != 0;
}

int lcw_crc32c_hardware_available(void) { return lcw_has_sse42; }

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

/*
 * Support routines for the cluster wire format: CRC-32C checksums of weight chunks, and
 * a reusable arena allocator for decoding protobuf-c messages without
 * touching the system allocator in steady state.
 */
#ifndef CLUSTER_WIRE_SUPPORT_H
#define CLUSTER_WIRE_SUPPORT_H

#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>

#ifdef __cplusplus
extern "C" {
#endif

/* MARK: - CRC-32C */

/* CRC-32C (Castagnoli polynomial 0x1EDC6F41, reflected, initial value and
 * final xor 0xFFFFFFFF). Pass 0 as `crc` to start; pass a previous result to
 * continue a checksum over more bytes. Uses SSE4.2 when available. */
uint32_t lcw_crc32c(uint32_t crc, const void *data, size_t length);

/* The table-driven CRC-32C, exposed for testing. */
uint32_t lcw_crc32c_portable(uint32_t crc, const void *data, size_t length);

/* 1 when lcw_crc32c uses the SSE4.2 crc32 instruction. */
int lcw_crc32c_hardware_available(void);

/* MARK: - Arena allocator */

/* A bump allocator that protobuf-c unpacks into. Frees are no-ops; a reset
 * discards everything and, when the previous use spilled past the main block,
 * grows the main block so that the next use of the same size does not. */
typedef struct LCWArena LCWArena;

LCWArena *lcw_arena_create(size_t initial_capacity);
void lcw_arena_destroy(LCWArena *arena);
void lcw_arena_reset(LCWArena *arena);
ProtobufCAllocator *lcw_arena_allocator(LCWArena *arena);
/* Bytes in the main block. */
size_t lcw_arena_capacity(const LCWArena *arena);
/* How many allocations since creation did not fit the main block and went to
 * the system allocator. */
size_t lcw_arena_spill_count(const LCWArena *arena);

#ifdef __cplusplus
}
#endif

#endif

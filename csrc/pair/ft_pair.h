/* pair/ft_pair.h - two connected in-process devices (every platform): what one sends, the other
 * receives. */
#ifndef FT_PAIR_H
#define FT_PAIR_H

#include "core/ft_device.h"

#define FT_PAIR_DEFAULT_CAPACITY 4096u              /* packets each direction holds */
#define FT_PAIR_DEFAULT_CAPACITY_BYTES (4u << 20)   /* bytes each direction holds */
#define FT_PAIR_MAX_CAPACITY (1u << 20)
#define FT_PAIR_MAX_CAPACITY_BYTES (1u << 30)
/* A packet of len bytes takes one record: a 4-byte length and the packet, padded to 8 bytes. */
#define FT_PAIR_RECORD_SIZE(len) ((4u + (len) + 7u) & ~7u)
/* The smallest capacity_bytes: two records of the largest packet. */
#define FT_PAIR_MIN_CAPACITY_BYTES (2u * FT_PAIR_RECORD_SIZE(FT_MAX_PACKET))
static const ft_limit ft_limit_capacity = FT_LIMIT("capacity", 1, FT_PAIR_MAX_CAPACITY, " packets");
static const ft_limit ft_limit_capacity_bytes =
    FT_LIMIT("capacity_bytes", FT_PAIR_MIN_CAPACITY_BYTES, FT_PAIR_MAX_CAPACITY_BYTES, " bytes");

/* Two connected devices: what one sends the other receives. Each direction holds at most `capacity`
 * packets and `capacity_bytes` bytes. */
int ft_memory_pair(uint32_t mtu, uint32_t capacity, uint32_t capacity_bytes, ft_device **a, ft_device **b,
                   ft_err *e);

#endif

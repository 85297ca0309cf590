/* icmp/ft_icmp.h - the Internet checksum and ICMP/ICMPv6 echo replies, for responders built on fasttun (pure
 * functions on caller-owned buffers; nothing here touches a device). */
#ifndef FT_ICMP_H
#define FT_ICMP_H

#include <stddef.h>
#include <stdint.h>

/* The one's complement sum of data (RFC 1071) added to `initial`, folded to 16 bits and complemented: the value
 * to store in a checksum field (with the field itself zero while summing). */
uint16_t ft_inet_checksum(const uint8_t *data, size_t len, uint32_t initial);

/* If p is an IPv4 ICMP echo request or an IPv6 ICMPv6 echo request (no extension headers) whose lengths agree with
 * the len bytes given, writes its echo reply (addresses swapped, TTL/hop limit 64, checksums recomputed) into out
 * and returns its length; out needs as many bytes as the request's IP length. Returns 0 for anything else. */
size_t ft_icmp_echo_reply(const uint8_t *p, size_t len, uint8_t *out, size_t cap);

#endif

/* core/ft_icmp.c - the Internet checksum and echo replies. */
#include "icmp/ft_icmp.h"

#include <string.h>

#define PROTO_ICMP 1u
#define PROTO_ICMPV6 58u
#define ICMP_ECHO_REQUEST 8u
#define ICMP_ECHO_REPLY 0u
#define ICMPV6_ECHO_REQUEST 128u
#define ICMPV6_ECHO_REPLY 129u
#define REPLY_TTL 64u

static uint32_t sum16(const uint8_t *data, size_t len, uint32_t acc)
{
    uint64_t total = acc;
    size_t i = 0;
    for (; i + 1 < len; i += 2)
        total += (uint32_t)data[i] << 8 | data[i + 1];
    if (i < len)
        total += (uint32_t)data[i] << 8;
    while (total >> 16)
        total = (total & 0xFFFFu) + (total >> 16);
    return (uint32_t)total;
}

uint16_t ft_inet_checksum(const uint8_t *data, size_t len, uint32_t initial)
{
    uint32_t s = sum16(data, len, initial);
    return (uint16_t)(~s & 0xFFFFu);
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static size_t reply4(const uint8_t *p, size_t len, uint8_t *out, size_t cap)
{
    size_t ihl = (size_t)(p[0] & 0x0Fu) * 4u;
    size_t total = (size_t)p[2] << 8 | p[3];
    if (ihl < 20 || total > len || total < ihl + 8 || p[9] != PROTO_ICMP || p[ihl] != ICMP_ECHO_REQUEST ||
        total > cap)
        return 0;
    memcpy(out, p, total);
    memcpy(out + 12, p + 16, 4); /* swap source and destination */
    memcpy(out + 16, p + 12, 4);
    out[8] = REPLY_TTL;
    put16(out + 10, 0);
    put16(out + 10, ft_inet_checksum(out, ihl, 0));
    uint8_t *icmp = out + ihl;
    icmp[0] = ICMP_ECHO_REPLY;
    put16(icmp + 2, 0);
    put16(icmp + 2, ft_inet_checksum(icmp, total - ihl, 0));
    return total;
}

static size_t reply6(const uint8_t *p, size_t len, uint8_t *out, size_t cap)
{
    size_t plen = (size_t)p[4] << 8 | p[5];
    if (p[6] != PROTO_ICMPV6 || 40 + plen > len || plen < 8 || p[40] != ICMPV6_ECHO_REQUEST || 40 + plen > cap)
        return 0;
    memcpy(out, p, 40 + plen);
    memcpy(out + 8, p + 24, 16); /* swap source and destination */
    memcpy(out + 24, p + 8, 16);
    out[7] = REPLY_TTL;
    uint8_t *icmp = out + 40;
    icmp[0] = ICMPV6_ECHO_REPLY;
    put16(icmp + 2, 0);
    /* The pseudo-header: both addresses (their sum does not depend on the order), the length, next header. */
    const uint8_t tail[8] = {0, 0, (uint8_t)(plen >> 8), (uint8_t)plen, 0, 0, 0, PROTO_ICMPV6};
    uint32_t acc = sum16(out + 8, 32, 0);
    acc = sum16(tail, sizeof(tail), acc);
    put16(icmp + 2, ft_inet_checksum(icmp, plen, acc));
    return 40 + plen;
}

size_t ft_icmp_echo_reply(const uint8_t *p, size_t len, uint8_t *out, size_t cap)
{
    if (len >= 28 && p[0] >> 4 == 4)
        return reply4(p, len, out, cap);
    if (len >= 48 && p[0] >> 4 == 6)
        return reply6(p, len, out, cap);
    return 0;
}

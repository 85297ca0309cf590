/* test_events.c - the rtnetlink notification decoder of events/ft_events.c on messages built here: well-formed
 * link and address messages, other interfaces' messages, and malformed ones (short, lying lengths, attributes
 * past the end, random bytes); ft_events_wait woken by ft_events_shutdown on another thread. Run under ASan/UBSan
 * by tests/test_events.py. */
#define _DEFAULT_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <net/if.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

#include "check.h"
#include "events/ft_events.h"

static uint32_t storage[4096];  /* 16 KiB, aligned like the kernel's datagrams */
#define BUF ((unsigned char *)storage)

static size_t put_attr(unsigned char *at, unsigned short type, const void *data, size_t len)
{
    struct rtattr rta = {.rta_len = (unsigned short)RTA_LENGTH(len), .rta_type = type};
    memcpy(at, &rta, sizeof(rta));
    memcpy(at + RTA_LENGTH(0), data, len);
    return RTA_ALIGN(rta.rta_len);
}

static size_t link_msg(unsigned char *at, unsigned short type, int index, unsigned flags, uint32_t mtu,
                       const char *name)
{
    struct nlmsghdr h = {.nlmsg_type = type};
    struct ifinfomsg ifi = {.ifi_family = AF_UNSPEC, .ifi_index = index, .ifi_flags = flags};
    size_t len = NLMSG_LENGTH(sizeof(ifi));
    memcpy(at + NLMSG_LENGTH(0), &ifi, sizeof(ifi));
    len = NLMSG_ALIGN(len);
    len += put_attr(at + len, IFLA_MTU, &mtu, sizeof(mtu));
    len += put_attr(at + len, IFLA_IFNAME, name, strlen(name) + 1);
    h.nlmsg_len = (uint32_t)len;
    memcpy(at, &h, sizeof(h));
    return NLMSG_ALIGN(len);
}

static size_t addr_msg(unsigned char *at, unsigned short type, int index, int family, const void *addr,
                       unsigned char prefix)
{
    struct nlmsghdr h = {.nlmsg_type = type};
    struct ifaddrmsg ifa = {.ifa_family = (unsigned char)family, .ifa_prefixlen = prefix,
                            .ifa_index = (unsigned)index};
    size_t size = family == AF_INET ? 4 : 16;
    memcpy(at + NLMSG_LENGTH(0), &ifa, sizeof(ifa));
    size_t len = NLMSG_ALIGN(NLMSG_LENGTH(sizeof(ifa)));
    len += put_attr(at + len, IFA_ADDRESS, addr, size);
    h.nlmsg_len = (uint32_t)len;
    memcpy(at, &h, sizeof(h));
    return NLMSG_ALIGN(len);
}

static void test_well_formed_messages(void)
{
    ft_device_event out[8];
    unsigned char v4[4] = {10, 1, 2, 3}, v6[16] = {0xfd, 0, [15] = 1};
    size_t len = 0, pos = 0;
    len += link_msg(BUF + len, RTM_NEWLINK, 7, IFF_UP, 1400, "ftev0");
    len += link_msg(BUF + len, RTM_NEWLINK, 8, 0, 1500, "other0");  /* not ours */
    len += addr_msg(BUF + len, RTM_NEWADDR, 7, AF_INET, v4, 24);
    len += addr_msg(BUF + len, RTM_DELADDR, 7, AF_INET6, v6, 64);
    len += link_msg(BUF + len, RTM_DELLINK, 7, 0, 1400, "ftev0");
    int n = ft_events_decode(BUF, len, &pos, 7, out, 8);
    CHECK(n == 4 && pos == len);
    CHECK(out[0].kind == FT_EV_LINK && out[0].ifindex == 7 && out[0].flags == IFF_UP && out[0].mtu == 1400);
    CHECK(strcmp(out[0].name, "ftev0") == 0);
    CHECK(out[1].kind == FT_EV_ADDR_ADDED && out[1].addr.family == 4 && out[1].addr.prefix == 24);
    CHECK(memcmp(out[1].addr.bytes, v4, 4) == 0);
    CHECK(out[2].kind == FT_EV_ADDR_REMOVED && out[2].addr.family == 6 && memcmp(out[2].addr.bytes, v6, 16) == 0);
    CHECK(out[3].kind == FT_EV_LINK_REMOVED);

    /* What does not fit stays for the next call. */
    pos = 0;
    CHECK(ft_events_decode(BUF, len, &pos, 7, out, 1) == 1 && out[0].kind == FT_EV_LINK && pos < len);
    CHECK(ft_events_decode(BUF, len, &pos, 7, out, 8) == 3 && pos == len);
    pos = 0;
    CHECK(ft_events_decode(BUF, len, &pos, 0, out, 8) == 5);  /* every interface */
}

static void test_malformed_messages(void)
{
    ft_device_event out[8];
    unsigned char v6[16] = {0xfd, 0, [15] = 2};
    size_t len, pos;

    /* A header claiming more than the datagram holds. */
    len = link_msg(BUF, RTM_NEWLINK, 7, IFF_UP, 1400, "ftev0");
    struct nlmsghdr *h = (struct nlmsghdr *)BUF;
    h->nlmsg_len = (uint32_t)len + 64;
    pos = 0;
    CHECK(ft_events_decode(BUF, len, &pos, 7, out, 8) == 0 && pos == len);

    /* A message too short for its ifinfomsg, then a good one. */
    len = link_msg(BUF, RTM_NEWLINK, 7, 0, 1400, "ftev0");
    h->nlmsg_len = NLMSG_LENGTH(4);
    size_t second = NLMSG_ALIGN(NLMSG_LENGTH(4));
    len = second + link_msg(BUF + second, RTM_NEWLINK, 7, IFF_UP, 1300, "ftev0");
    pos = 0;
    CHECK(ft_events_decode(BUF, len, &pos, 7, out, 8) == 1 && out[0].mtu == 1300);

    /* An attribute whose length runs past its message, and an address attribute too short for the family. */
    len = link_msg(BUF, RTM_NEWLINK, 7, IFF_UP, 1400, "ftev0");
    struct rtattr *rta = (struct rtattr *)(BUF + NLMSG_ALIGN(NLMSG_LENGTH(sizeof(struct ifinfomsg))));
    rta->rta_len = 4000;
    pos = 0;
    CHECK(ft_events_decode(BUF, len, &pos, 7, out, 8) == 1 && out[0].mtu == 0);
    len = addr_msg(BUF, RTM_NEWADDR, 7, AF_INET6, v6, 64);
    rta = (struct rtattr *)(BUF + NLMSG_ALIGN(NLMSG_LENGTH(sizeof(struct ifaddrmsg))));
    rta->rta_len = RTA_LENGTH(4);  /* an IPv6 address of 4 bytes */
    pos = 0;
    CHECK(ft_events_decode(BUF, len, &pos, 7, out, 8) == 0);

    /* A name without its terminating NUL is cut, never read past. */
    len = link_msg(BUF, RTM_NEWLINK, 7, 0, 1400, "abcdefghijklmnopqrstuvwxyz");
    pos = 0;
    CHECK(ft_events_decode(BUF, len, &pos, 7, out, 8) == 1 && strlen(out[0].name) == 15);

    /* Fewer bytes than a header, and nothing. */
    pos = 0;
    CHECK(ft_events_decode(BUF, 7, &pos, 7, out, 8) == 0 && pos == 7);
    pos = 0;
    CHECK(ft_events_decode(BUF, 0, &pos, 7, out, 8) == 0 && pos == 0);

    /* Random bytes: whatever they decode to, every event stays inside its array and the parser ends. */
    srand(12345);
    for (int round = 0; round < 20000; round++) {
        size_t n = (size_t)(rand() % 512);
        for (size_t i = 0; i < n; i++)
            BUF[i] = (unsigned char)rand();
        if (n >= sizeof(struct nlmsghdr) && rand() % 2) {  /* mostly plausible lengths and types */
            h->nlmsg_len = (uint32_t)(rand() % (int)(n + 8));
            h->nlmsg_type = (unsigned short)(RTM_NEWLINK + rand() % 8);
        }
        pos = 0;
        int got = 0, calls = 0;
        while (pos < n && calls++ < 600)
            got += ft_events_decode(BUF, n, &pos, 0, out, 8);
        if (pos < n || got < 0) {
            CHECK(0);
            break;
        }
    }
    CHECK(1);
}

static void *wait_forever(void *arg)
{
    ft_err e;
    static int result;
    result = ft_events_wait(arg, -1, &e);
    return &result;
}

/* ft_events_wait and ft_events_shutdown on a real socket: a timeout, then a thread waiting without end woken. */
static void test_wait_and_shutdown(void)
{
    ft_err e;
    ft_events *ev = ft_events_open(0, &e);
    CHECK(ev != NULL);
    if (!ev)
        return;
    CHECK(ft_events_open_luid(1, &e) == NULL && e.status == FT_EUNSUPPORTED);
    CHECK(ft_events_dropped(ev) == 0);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, wait_forever, ev) == 0);
    struct timespec pause = {0, 30 * 1000 * 1000};
    nanosleep(&pause, NULL);
    ft_events_shutdown(ev);
    void *result = NULL;
    CHECK(pthread_join(t, &result) == 0 && result && *(int *)result == FT_ECLOSED);
    CHECK(ft_events_wait(ev, 1000, &e) == FT_ECLOSED);
    ft_device_event out[4];
    CHECK(ft_events_read(ev, out, 4, &e) == FT_ECLOSED);
    ft_events_shutdown(ev); /* again: harmless */
    ft_events_close(ev);
}

int main(void)
{
    test_well_formed_messages();
    test_malformed_messages();
    test_wait_and_shutdown();
    return check_summary();
}

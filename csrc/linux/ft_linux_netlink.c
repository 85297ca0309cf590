/* linux/ft_linux_netlink.c - a minimal rtnetlink client for interface addresses. Every reply is checked against
 * its own length fields before it is read. */
#ifdef __linux__
#define _GNU_SOURCE
#include "linux/ft_linux_netlink.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>

#define NL_BUF 32768

/* Answers left over from an earlier request that ended early must not be taken for the next one's. */
static void drain(int s)
{
    char buf[1024];
    while (recv(s, buf, sizeof(buf), MSG_DONTWAIT) > 0) {
    }
}

int ft_netlink_open(ft_err *e)
{
    int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (s < 0) {
        ft_fail_os(e, errno, "cannot open a NETLINK_ROUTE socket");
        return -1;
    }
    struct timeval tv = {2, 0}; /* the kernel answers at once; never hang on a lost reply */
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return s;
}

static void addr_text(const ft_addr *a, char *buf, size_t len)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    inet_ntop(a->family == 4 ? AF_INET : AF_INET6, a->bytes, ip, sizeof(ip));
    snprintf(buf, len, "%s/%u", ip, a->prefix);
}

static void put_attr(struct nlmsghdr *h, unsigned short type, const void *data, size_t len)
{
    struct rtattr *rta = (struct rtattr *)((char *)h + NLMSG_ALIGN(h->nlmsg_len));
    rta->rta_type = type;
    rta->rta_len = (unsigned short)RTA_LENGTH(len);
    memcpy(RTA_DATA(rta), data, len);
    h->nlmsg_len = NLMSG_ALIGN(h->nlmsg_len) + RTA_ALIGN(rta->rta_len);
}

/* Sends one request and reads the kernel's acknowledgement: 0 or a positive errno. */
static int nl_request_ack(int s, struct nlmsghdr *req, int *code, ft_err *e)
{
    drain(s);
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    if (sendto(s, req, req->nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0) {
        int err = errno;
        return ft_fail_os(e, err, "sending a netlink request failed");
    }
    char buf[4096];
    ssize_t n = recv(s, buf, sizeof(buf), 0);
    int err = errno;
    if (n < 0)
        return ft_fail_os(e, err, "no netlink answer");
    struct nlmsghdr *h = (struct nlmsghdr *)buf;
    if (!NLMSG_OK(h, (size_t)n) || h->nlmsg_type != NLMSG_ERROR ||
        h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr)))
        return ft_fail(e, FT_ECORRUPT, EIO, "the kernel's netlink answer is malformed");
    *code = -((struct nlmsgerr *)NLMSG_DATA(h))->error;
    return FT_OK;
}

int ft_netlink_address(int s, unsigned ifindex, const char *name, const ft_addr *a, int add, ft_err *e)
{
    char text[64];
    addr_text(a, text, sizeof(text));
    size_t alen = a->family == 4 ? 4 : 16;
    union {
        struct nlmsghdr h;
        char buf[256];
    } req;
    memset(&req, 0, sizeof(req));
    req.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg));
    req.h.nlmsg_type = add ? RTM_NEWADDR : RTM_DELADDR;
    req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | (add ? NLM_F_CREATE | NLM_F_EXCL : 0);
    req.h.nlmsg_seq = 1;
    struct ifaddrmsg *ifa = NLMSG_DATA(&req.h);
    ifa->ifa_family = a->family == 4 ? AF_INET : AF_INET6;
    ifa->ifa_prefixlen = a->prefix;
    ifa->ifa_index = ifindex;
    ifa->ifa_scope = RT_SCOPE_UNIVERSE;
    /* A TUN link has no neighbours to collide with: skip duplicate address detection so an IPv6 address is
     * usable at once instead of staying "tentative" for a second or two. */
    if (a->family == 6)
        ifa->ifa_flags = IFA_F_NODAD;
    put_attr(&req.h, IFA_LOCAL, a->bytes, alen);
    put_attr(&req.h, IFA_ADDRESS, a->bytes, alen);

    int code = 0;
    int st = nl_request_ack(s, &req.h, &code, e);
    if (st != FT_OK)
        return st;
    if (code == 0)
        return FT_OK;
    if (code == EEXIST)
        return ft_fail(e, FT_ESYS, EEXIST, "address %s is already on '%s'", text, name);
    if (code == EADDRNOTAVAIL && !add)
        return ft_fail(e, FT_ESYS, EADDRNOTAVAIL, "address %s is not on '%s'", text, name);
    if (code == EPERM || code == EACCES)
        return ft_fail(e, FT_ESYS, EPERM, "changing addresses on '%s' needs CAP_NET_ADMIN (run as root)", name);
    if (code == EACCES || (code == EINVAL && a->family == 6))
        return ft_fail_os(e, code, "the kernel refused IPv6 address %s on '%s' (is IPv6 disabled, or the MTU "
                                   "below 1280?)", text, name);
    return ft_fail_os(e, code, "%s address %s on '%s'", add ? "adding" : "removing", text, name);
}

int ft_netlink_route(int s, unsigned ifindex, const char *name, int add, const ft_route *r, ft_err *e)
{
    size_t alen = r->family == 4 ? 4 : 16;
    char text[128], ip[INET6_ADDRSTRLEN] = "?", via[INET6_ADDRSTRLEN + 8] = "";
    inet_ntop(r->family == 4 ? AF_INET : AF_INET6, r->dest, ip, sizeof(ip));
    if (r->has_gateway) {
        char gw[INET6_ADDRSTRLEN] = "?";
        inet_ntop(r->family == 4 ? AF_INET : AF_INET6, r->gateway, gw, sizeof(gw));
        snprintf(via, sizeof(via), " via %s", gw);
    }
    snprintf(text, sizeof(text), "%s/%u%s", ip, r->prefix, via);
    union {
        struct nlmsghdr h;
        char buf[256];
    } req;
    memset(&req, 0, sizeof(req));
    req.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
    req.h.nlmsg_type = add ? RTM_NEWROUTE : RTM_DELROUTE;
    req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | (add ? NLM_F_CREATE | NLM_F_EXCL : 0);
    req.h.nlmsg_seq = 4;
    struct rtmsg *rtm = NLMSG_DATA(&req.h);
    rtm->rtm_family = r->family == 4 ? AF_INET : AF_INET6;
    rtm->rtm_dst_len = r->prefix;
    rtm->rtm_table = RT_TABLE_MAIN;
    rtm->rtm_protocol = RTPROT_STATIC;
    rtm->rtm_scope = r->has_gateway ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK;
    rtm->rtm_type = RTN_UNICAST;
    uint32_t oif = ifindex;
    put_attr(&req.h, RTA_DST, r->dest, alen);
    put_attr(&req.h, RTA_OIF, &oif, sizeof(oif));
    if (r->has_gateway)
        put_attr(&req.h, RTA_GATEWAY, r->gateway, alen);
    if (r->metric)
        put_attr(&req.h, RTA_PRIORITY, &r->metric, sizeof(r->metric));
    int code = 0;
    int st = nl_request_ack(s, &req.h, &code, e);
    if (st != FT_OK)
        return st;
    if (code == 0)
        return FT_OK;
    if (code == EEXIST)
        return ft_fail(e, FT_ESYS, EEXIST, "route %s through '%s' already exists", text, name);
    if (code == ESRCH && !add)
        return ft_fail(e, FT_ESYS, ESRCH, "there is no route %s through '%s'", text, name);
    if (code == EPERM || code == EACCES)
        return ft_fail(e, FT_ESYS, EPERM, "changing routes needs CAP_NET_ADMIN (run as root)");
    if (code == ENETUNREACH)
        return ft_fail(e, FT_ESYS, ENETUNREACH, "gateway of route %s is not reachable through '%s' (is the link up "
                                                "and an address of that network on it?)", text, name);
    return ft_fail_os(e, code, "%s route %s through '%s'", add ? "adding" : "removing", text, name);
}

/* 1 if the kernel has a local route for the address (it accepts packets for it), 0 if not yet. */
static int is_local(int s, const ft_addr *a, ft_err *e)
{
    (void)e;
    struct {
        struct nlmsghdr h;
        struct rtmsg rtm;
        char attrs[64];
    } req;
    memset(&req, 0, sizeof(req));
    req.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
    req.h.nlmsg_type = RTM_GETROUTE;
    req.h.nlmsg_flags = NLM_F_REQUEST;
    req.h.nlmsg_seq = 5;
    req.rtm.rtm_family = a->family == 4 ? AF_INET : AF_INET6;
    req.rtm.rtm_dst_len = a->family == 4 ? 32 : 128;
    put_attr(&req.h, RTA_DST, a->bytes, a->family == 4 ? 4 : 16);
    drain(s);
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    int result = 0;
    if (sendto(s, &req, req.h.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) >= 0) {
        char buf[4096];
        ssize_t n = recv(s, buf, sizeof(buf), 0);
        struct nlmsghdr *h = (struct nlmsghdr *)buf;
        if (n > 0 && NLMSG_OK(h, (size_t)n) && h->nlmsg_type == RTM_NEWROUTE &&
            h->nlmsg_len >= NLMSG_LENGTH(sizeof(struct rtmsg)))
            result = ((struct rtmsg *)NLMSG_DATA(h))->rtm_type == RTN_LOCAL;
    }
    return result;
}

int ft_netlink_wait_local(int s, const ft_addr *a, uint32_t timeout_ms, ft_err *e)
{
    uint64_t deadline = ft_now_ns() + (uint64_t)timeout_ms * 1000000u;
    for (;;) {
        int r = is_local(s, a, e);
        if (r != 0)
            return r == 1 ? FT_OK : r;
        if (ft_now_ns() >= deadline)
            return FT_ETIMEDOUT;
        ft_sleep_us(1000);
    }
}

static int parse_addr_msg(struct nlmsghdr *h, unsigned ifindex, ft_addr *out)
{
    if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct ifaddrmsg)))
        return -1;
    struct ifaddrmsg *ifa = NLMSG_DATA(h);
    if (ifa->ifa_index != ifindex || (ifa->ifa_family != AF_INET && ifa->ifa_family != AF_INET6))
        return 0;
    size_t alen = ifa->ifa_family == AF_INET ? 4 : 16;
    if (ifa->ifa_prefixlen > alen * 8)
        return -1;
    const void *local = NULL, *address = NULL;
    int len = (int)IFA_PAYLOAD(h);
    for (struct rtattr *rta = IFA_RTA(ifa); RTA_OK(rta, len); rta = RTA_NEXT(rta, len)) {
        if (RTA_PAYLOAD(rta) != alen)
            continue;
        if (rta->rta_type == IFA_LOCAL)
            local = RTA_DATA(rta);
        else if (rta->rta_type == IFA_ADDRESS)
            address = RTA_DATA(rta);
    }
    const void *addr = local ? local : address; /* IFA_ADDRESS is the peer on point-to-point links */
    if (!addr)
        return 0;
    memset(out, 0, sizeof(*out));
    out->family = ifa->ifa_family == AF_INET ? 4 : 6;
    out->prefix = ifa->ifa_prefixlen;
    memcpy(out->bytes, addr, alen);
    return 1;
}

int ft_netlink_list_addresses(int s, unsigned ifindex, ft_addr *out, uint32_t max, uint32_t *n, ft_err *e)
{
    struct {
        struct nlmsghdr h;
        struct ifaddrmsg ifa;
    } req;
    memset(&req, 0, sizeof(req));
    req.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg));
    req.h.nlmsg_type = RTM_GETADDR;
    req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.h.nlmsg_seq = 2;
    req.ifa.ifa_family = AF_UNSPEC;
    req.ifa.ifa_index = ifindex;

    drain(s);
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    if (sendto(s, &req, req.h.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0) {
        int err = errno;
        return ft_fail_os(e, err, "sending the netlink address dump request failed");
    }
    static __thread char buf[NL_BUF];
    uint32_t count = 0;
    int r = FT_OK;
    for (int done = 0; !done;) {
        ssize_t got = recv(s, buf, sizeof(buf), 0);
        if (got < 0) {
            r = ft_fail_os(e, errno, "reading the netlink address dump failed");
            break;
        }
        size_t len = (size_t)got;
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
            if (h->nlmsg_type == NLMSG_DONE) {
                done = 1;
                break;
            }
            if (h->nlmsg_type == NLMSG_ERROR) {
                int code = h->nlmsg_len >= NLMSG_LENGTH(sizeof(struct nlmsgerr))
                               ? -((struct nlmsgerr *)NLMSG_DATA(h))->error
                               : EIO;
                r = ft_fail_os(e, code, "the kernel refused the address dump");
                done = 1;
                break;
            }
            if (h->nlmsg_type != RTM_NEWADDR)
                continue;
            ft_addr a;
            int p = parse_addr_msg(h, ifindex, &a);
            if (p < 0) {
                r = ft_fail(e, FT_ECORRUPT, EIO, "the kernel's address dump holds a malformed entry");
                done = 1;
                break;
            }
            if (p == 1) {
                if (count < max)
                    out[count] = a;
                count++;
            }
        }
        if (got == 0)
            break;
    }
    *n = count;
    return r;
}

int ft_netlink_link_drops(int s, unsigned ifindex, uint64_t *os_rx_dropped, uint64_t *os_tx_dropped, ft_err *e)
{
    struct {
        struct nlmsghdr h;
        struct ifinfomsg ifi;
    } req;
    memset(&req, 0, sizeof(req));
    req.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
    req.h.nlmsg_type = RTM_GETLINK;
    req.h.nlmsg_flags = NLM_F_REQUEST;
    req.h.nlmsg_seq = 3;
    req.ifi.ifi_family = AF_UNSPEC;
    req.ifi.ifi_index = (int)ifindex;
    drain(s);
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    if (sendto(s, &req, req.h.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0) {
        int err = errno;
        return ft_fail_os(e, err, "sending the netlink link request failed");
    }
    char buf[16384];
    ssize_t got = recv(s, buf, sizeof(buf), 0);
    int err = errno;
    if (got < 0)
        return ft_fail_os(e, err, "no netlink answer for the link counters");
    struct nlmsghdr *h = (struct nlmsghdr *)buf;
    if (!NLMSG_OK(h, (size_t)got))
        return ft_fail(e, FT_ECORRUPT, EIO, "the kernel's link answer is malformed");
    if (h->nlmsg_type == NLMSG_ERROR) {
        int code = h->nlmsg_len >= NLMSG_LENGTH(sizeof(struct nlmsgerr)) ? -((struct nlmsgerr *)NLMSG_DATA(h))->error
                                                                         : EIO;
        return ft_fail_os(e, code, "the kernel refused the link counters of interface %u", ifindex);
    }
    if (h->nlmsg_type != RTM_NEWLINK || h->nlmsg_len < NLMSG_LENGTH(sizeof(struct ifinfomsg)))
        return ft_fail(e, FT_ECORRUPT, EIO, "the kernel's link answer is malformed");
    struct ifinfomsg *ifi = NLMSG_DATA(h);
    int len = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof(*ifi)));
    for (struct rtattr *rta = IFLA_RTA(ifi); RTA_OK(rta, len); rta = RTA_NEXT(rta, len)) {
        if (rta->rta_type == IFLA_STATS64 && RTA_PAYLOAD(rta) >= sizeof(struct rtnl_link_stats64)) {
            struct rtnl_link_stats64 st;
            memcpy(&st, RTA_DATA(rta), sizeof(st));
            /* The kernel's view is the reverse of ours: what it could not queue towards us is its TX drop. */
            *os_rx_dropped = st.tx_dropped;
            *os_tx_dropped = st.rx_dropped;
            return FT_OK;
        }
    }
    return ft_fail(e, FT_ECORRUPT, EIO, "the kernel's link answer has no counters");
}
#endif

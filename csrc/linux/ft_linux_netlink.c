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

/* Sends a request to the kernel (what: "address dump"), answers left from an earlier one dropped first. */
static int nl_send(int s, const void *req, const char *what, ft_err *e)
{
    drain(s);
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    const struct nlmsghdr *h = req;
    if (sendto(s, req, h->nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
        return ft_fail_os(e, errno, "sending the netlink %s request failed", what);
    return FT_OK;
}

/* One answer of the kernel into buf: its length, or -1 with e saying why. */
static ssize_t nl_recv(int s, char *buf, size_t len, const char *what, ft_err *e)
{
    ssize_t n = recv(s, buf, len, 0);
    if (n < 0)
        ft_fail_os(e, errno, "no netlink answer to the %s request", what);
    return n;
}

/* Sends a request and reads the first answer into buf: its length, or an error status. */
static ssize_t nl_exchange(int s, const void *req, char *buf, size_t len, const char *what, ft_err *e)
{
    int r = nl_send(s, req, what, e);
    if (r != FT_OK)
        return r;
    ssize_t n = nl_recv(s, buf, len, what, e);
    return n < 0 ? e->status : n;
}

/* Sends one request and reads the kernel's acknowledgement: 0 or a positive errno. */
static int nl_request_ack(int s, struct nlmsghdr *req, int *code, ft_err *e)
{
    char buf[4096];
    ssize_t n = nl_exchange(s, req, buf, sizeof(buf), "change", e);
    if (n < 0)
        return (int)n;
    struct nlmsghdr *h = (struct nlmsghdr *)buf;
    if (!NLMSG_OK(h, (size_t)n) || h->nlmsg_type != NLMSG_ERROR ||
        h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr)))
        return ft_fail(e, FT_ECORRUPT, EIO, "the kernel's netlink answer is malformed");
    *code = -((struct nlmsgerr *)NLMSG_DATA(h))->error;
    return FT_OK;
}

/* A request: its header, a body and attributes. */
typedef union nl_req {
    struct nlmsghdr h;
    char buf[256];
} nl_req;

/* Flags of a request that adds something (never replacing what is there) or removes it. */
#define NL_CHANGE(add) (NLM_F_REQUEST | NLM_F_ACK | ((add) ? NLM_F_CREATE | NLM_F_EXCL : 0))

/* Starts a request; returns its body of `body` bytes, zeroed. */
static void *nl_begin(nl_req *req, unsigned short type, unsigned short flags, unsigned seq, size_t body)
{
    memset(req, 0, sizeof(*req));
    req->h.nlmsg_len = NLMSG_LENGTH(body);
    req->h.nlmsg_type = type;
    req->h.nlmsg_flags = flags;
    req->h.nlmsg_seq = seq;
    return NLMSG_DATA(&req->h);
}

/* Sends a change and words the refusals every change shares. what: "address 10.0.0.1/24 on 'ft0'"; absent: what
 * removing it says when it is not there (the kernel's errno for that: missing); kind: what a change is of
 * ("addresses on 'ft0'"). Returns FT_OK, an error status, or another errno (positive) for the caller to word. */
static int nl_change(int s, nl_req *req, int add, const char *what, int missing, const char *absent, const char *kind,
                     ft_err *e)
{
    int code = 0;
    int st = nl_request_ack(s, &req->h, &code, e);
    if (st != FT_OK || code == 0)
        return st;
    if (code == EEXIST)
        return ft_fail(e, FT_ESYS, EEXIST, "%s already exists", what);
    if (code == missing && !add)
        return ft_fail(e, FT_ESYS, missing, "%s", absent);
    if (code == EPERM || code == EACCES)
        return ft_fail(e, FT_ESYS, EPERM, "changing %s needs CAP_NET_ADMIN (run as root)", kind);
    return code;
}

int ft_netlink_address(int s, unsigned ifindex, const char *name, const ft_addr *a, int add, ft_err *e)
{
    char text[64], what[128], absent[128], kind[64];
    addr_text(a, text, sizeof(text));
    snprintf(what, sizeof(what), "address %s on '%s'", text, name);
    snprintf(absent, sizeof(absent), "address %s is not on '%s'", text, name);
    snprintf(kind, sizeof(kind), "addresses on '%s'", name);
    size_t alen = a->family == 4 ? 4 : 16;
    nl_req req;
    struct ifaddrmsg *ifa = nl_begin(&req, add ? RTM_NEWADDR : RTM_DELADDR, NL_CHANGE(add), 1, sizeof(*ifa));
    /* A TUN link has no neighbours to collide with: skip duplicate address detection (IFA_F_NODAD) so an IPv6
     * address is usable at once instead of staying "tentative" for a second or two. */
    *ifa = (struct ifaddrmsg){.ifa_family = a->family == 4 ? AF_INET : AF_INET6, .ifa_prefixlen = a->prefix,
                              .ifa_flags = a->family == 6 ? IFA_F_NODAD : 0, .ifa_scope = RT_SCOPE_UNIVERSE,
                              .ifa_index = ifindex};
    put_attr(&req.h, IFA_LOCAL, a->bytes, alen);
    put_attr(&req.h, IFA_ADDRESS, a->bytes, alen);

    int code = nl_change(s, &req, add, what, EADDRNOTAVAIL, absent, kind, e);
    if (code <= 0)
        return code;
    if (code == EINVAL && a->family == 6)
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
    char what[192], absent[208];
    snprintf(what, sizeof(what), "route %s through '%s'", text, name);
    snprintf(absent, sizeof(absent), "there is no %s", what);
    nl_req req;
    struct rtmsg *rtm = nl_begin(&req, add ? RTM_NEWROUTE : RTM_DELROUTE, NL_CHANGE(add), 4, sizeof(*rtm));
    *rtm = (struct rtmsg){.rtm_family = r->family == 4 ? AF_INET : AF_INET6, .rtm_dst_len = r->prefix,
                          .rtm_table = RT_TABLE_MAIN, .rtm_protocol = RTPROT_STATIC,
                          .rtm_scope = r->has_gateway ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK, .rtm_type = RTN_UNICAST};
    uint32_t oif = ifindex;
    put_attr(&req.h, RTA_DST, r->dest, alen);
    put_attr(&req.h, RTA_OIF, &oif, sizeof(oif));
    if (r->has_gateway)
        put_attr(&req.h, RTA_GATEWAY, r->gateway, alen);
    if (r->metric)
        put_attr(&req.h, RTA_PRIORITY, &r->metric, sizeof(r->metric));
    int code = nl_change(s, &req, add, what, ESRCH, absent, "routes", e);
    if (code <= 0)
        return code;
    if (code == ENETUNREACH)
        return ft_fail(e, FT_ESYS, ENETUNREACH, "gateway of route %s is not reachable through '%s' (is the link up "
                                                "and an address of that network on it?)", text, name);
    return ft_fail_os(e, code, "%s route %s through '%s'", add ? "adding" : "removing", text, name);
}

/* 1 if the kernel has a local route for the address (it accepts packets for it), 0 if not yet. */
static int is_local(int s, const ft_addr *a, ft_err *e)
{
    (void)e;
    nl_req req;
    struct rtmsg *rtm = nl_begin(&req, RTM_GETROUTE, NLM_F_REQUEST, 5, sizeof(*rtm));
    rtm->rtm_family = a->family == 4 ? AF_INET : AF_INET6;
    rtm->rtm_dst_len = a->family == 4 ? 32 : 128;
    put_attr(&req.h, RTA_DST, a->bytes, a->family == 4 ? 4 : 16);
    ft_err ignored;
    char buf[4096];
    ssize_t n = nl_exchange(s, &req, buf, sizeof(buf), "route", &ignored);
    struct nlmsghdr *h = (struct nlmsghdr *)buf;
    return n > 0 && NLMSG_OK(h, (size_t)n) && h->nlmsg_type == RTM_NEWROUTE &&
           h->nlmsg_len >= NLMSG_LENGTH(sizeof(struct rtmsg)) &&
           ((struct rtmsg *)NLMSG_DATA(h))->rtm_type == RTN_LOCAL;
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
    nl_req req;
    struct ifaddrmsg *ifa = nl_begin(&req, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 2, sizeof(*ifa));
    ifa->ifa_family = AF_UNSPEC;
    ifa->ifa_index = ifindex;

    int r = nl_send(s, &req, "address dump", e);
    if (r != FT_OK)
        return r;
    static __thread char buf[NL_BUF];
    uint32_t count = 0;
    for (int done = 0; !done;) {
        ssize_t got = nl_recv(s, buf, sizeof(buf), "address dump", e);
        if (got < 0) {
            r = e->status;
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
    nl_req req;
    struct ifinfomsg *ask = nl_begin(&req, RTM_GETLINK, NLM_F_REQUEST, 3, sizeof(*ask));
    ask->ifi_family = AF_UNSPEC;
    ask->ifi_index = (int)ifindex;
    char buf[16384];
    ssize_t got = nl_exchange(s, &req, buf, sizeof(buf), "link counters", e);
    if (got < 0)
        return (int)got;
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

/* udp/ft_udp_win.c - the UDP endpoint's system calls on Windows, with the socket in event-select mode so that the
 * reader waits on its event together with its stop event.
 *
 * Receive: WSARecvMsg (its pointer from WSAIoctl) with the source of each datagram. With URO
 * (UDP_RECV_MAX_COALESCED_SIZE, asked for per socket at open) one receive returns a train into a buffer of the
 * endpoint's, sized for the offload specification's largest unit, and its UDP_COALESCED_INFO control message
 * says the segment size; the train is split into the caller's batches by udp/ft_udp_train.h. URO is known to
 * coalesce wrongly on some machines (trains without their control message), so the first unit whose
 * segmentation cannot be right switches it off for the socket for good, counted. Without URO each datagram is
 * received straight into the batch.
 *
 * Send: WSASendMsg with each message's destination; with USO a run of equal-sized datagrams to one destination
 * (udp/ft_udp_runs.h; no short last segment, which some hardware mishandles) is one message whose
 * UDP_SEND_MSG_SIZE control message gives the segment size. The option is only ever given per message with more
 * than one segment: set on a single segment it can fail, and left set on the socket it would segment every
 * later send. USO is probed per socket (getsockopt) and given up for the socket at the first refusal, since
 * support changes with the driver; the refused run is sent again a datagram per message.
 *
 * Where WSARecvMsg/WSASendMsg are missing or refused, recvfrom/sendto one datagram per call; an endpoint opened
 * with per_datagram takes that path from the start, without USO/URO (the offloads are still probed, to report). */
#ifdef _WIN32
#include "udp/ft_udp_internal.h"
#include "udp/ft_udp_runs.h"
#include "udp/ft_udp_train.h"

/* Not in mingw-w64's headers; the values of Microsoft's ws2ipdef.h (IPPROTO_UDP level). */
#ifndef UDP_SEND_MSG_SIZE
#define UDP_SEND_MSG_SIZE 2
#endif
#ifndef UDP_RECV_MAX_COALESCED_SIZE
#define UDP_RECV_MAX_COALESCED_SIZE 3
#endif
#ifndef UDP_COALESCED_INFO
#define UDP_COALESCED_INFO 3
#endif

#define WIN_MAX_SENDS 64u        /* send calls per ft_udp_os_send_some (bounds the lock hold) */
#define URO_REQUEST 65527u       /* the coalesced size asked for: the largest UDP payload */
#define URO_UNIT (256u << 10)    /* the receive buffer: the offload specification's largest unit, since drivers
                                  * have been seen to coalesce beyond what was asked */

void ft_udp_os_init(udp_dev *u) { u->os.ev = WSA_INVALID_EVENT; }

/* Errors a UDP socket reports for an earlier datagram (ICMP): the socket stays usable. */
static int is_icmp_error(int err) { return err == WSAECONNRESET || err == WSAENETRESET || err == WSAEHOSTUNREACH; }

/* ---- receive -------------------------------------------------------------------------------------------- */

/* One receive into buf: its length, source, and the segment size of a UDP_COALESCED_INFO control message
 * (*has_seg 0 without one). 0, or the WSA error. */
static int receive_one(udp_dev *u, uint8_t *buf, uint32_t size, uint32_t *len, udp_name *from, uint32_t *seg,
                       int *has_seg)
{
    *seg = 0;
    *has_seg = 0;
    if (!ft_atomic_load(&u->os.recvmsg_on)) {
        int fl = (int)sizeof(*from);
        int r = recvfrom(u->fd, (char *)buf, (int)size, 0, &from->sa, &fl);
        if (r == SOCKET_ERROR)
            return WSAGetLastError();
        *len = (uint32_t)r;
        return 0;
    }
    uint64_t ctrl[16]; /* aligned as WSACMSGHDR needs */
    WSABUF wb = {size, (char *)buf};
    WSAMSG m;
    memset(&m, 0, sizeof(m));
    m.name = &from->sa;
    m.namelen = (int)sizeof(*from);
    m.lpBuffers = &wb;
    m.dwBufferCount = 1;
    m.Control.buf = (char *)ctrl;
    m.Control.len = sizeof(ctrl);
    DWORD got = 0;
    if (u->os.recvmsg(u->fd, &m, &got, NULL, NULL) == SOCKET_ERROR)
        return WSAGetLastError();
    *len = got;
    for (WSACMSGHDR *c = WSA_CMSG_FIRSTHDR(&m); c; c = WSA_CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level == IPPROTO_UDP && c->cmsg_type == UDP_COALESCED_INFO &&
            c->cmsg_len >= WSA_CMSG_LEN(sizeof(DWORD))) {
            DWORD v;
            memcpy(&v, WSA_CMSG_DATA(c), sizeof(v));
            *seg = v;
            *has_seg = 1;
        }
    }
    return 0;
}

/* URO off for the socket, for good (a unit looked wrong, or WSARecvMsg is gone). */
static void uro_off(udp_dev *u)
{
    DWORD off = 0;
    ft_atomic_store(&u->gro, 0);
    setsockopt(u->fd, IPPROTO_UDP, UDP_RECV_MAX_COALESCED_SIZE, (const char *)&off, sizeof(off));
}

/* Delivers the staged unit's datagrams from where it stopped; 0 when the batch filled first. */
static int deliver_unit(ft_device *d, ft_batch *b, int *n)
{
    udp_dev *u = U(d);
    ft_udp_train t = {.full = u->os.got, .copied = u->os.got, .seg = u->os.seg, .max = u->max_datagram};
    while (u->os.off < u->os.got) {
        int deliver;
        uint32_t piece = ft_udp_train_piece(&t, u->os.off, &deliver);
        if (!deliver) { /* larger than max_datagram: this one only */
            ft_atomic_add64(&u->info.rx_dropped_trunc, 1);
            ft_atomic_add64(&d->stats.rx_dropped_oversize, 1);
        } else if (!ft_udp_append(b, u->os.unit + u->os.off, piece, &u->os.from)) {
            return 0;
        } else {
            (*n)++;
        }
        u->os.off += piece;
    }
    return 1;
}

/* Datagrams into the batch: the rest of a staged train first, then one receive after another until the batch
 * is full or the socket empty. WSAEMSGSIZE says a datagram (or a train) was larger than the buffer (the rest is
 * gone): dropped and counted. WSAECONNRESET is an ICMP port unreachable for an earlier datagram. */
int ft_udp_os_recv(ft_device *d, ft_batch *b, ft_err *e)
{
    udp_dev *u = U(d);
    int n = 0, icmp = 0, result = FT_EAGAIN;
    ft_mutex_lock(u->rx_lock);
    WSAResetEvent(u->os.ev); /* before trying: what arrives after the attempt sets it again */
    for (;;) {
        if (u->os.off < u->os.got) {
            if (!deliver_unit(d, b, &n))
                break;
            continue;
        }
        if (b->count >= b->max)
            break;
        int uro = ft_atomic_load(&u->gro);
        uint8_t *buf = uro ? u->os.unit : b->data + b->used;
        uint32_t size = uro ? u->os.unit_size : u->max_datagram;
        if (!uro && b->cap - b->used < u->max_datagram)
            break;
        uint32_t len = 0, seg;
        int has_seg;
        udp_name from;
        int err = receive_one(u, buf, size, &len, &from, &seg, &has_seg);
        if (err == WSAEOPNOTSUPP && ft_atomic_load(&u->os.recvmsg_on)) {
            ft_atomic_store(&u->os.recvmsg_on, 0); /* URO needs its control data */
            ft_atomic_add64(&u->info.message_fallbacks, 1);
            uro_off(u);
            continue;
        }
        if (err) {
            if (err == WSAEWOULDBLOCK)
                break;
            if (err == WSAEMSGSIZE) {
                ft_atomic_add64(&u->info.rx_dropped_trunc, 1);
                ft_atomic_add64(&d->stats.rx_dropped_oversize, 1);
                continue;
            }
            if (is_icmp_error(err) && icmp++ < ICMP_RETRIES) {
                ft_atomic_add64(&u->info.rx_icmp_errors, 1);
                continue;
            }
            if (n > 0 || is_icmp_error(err))
                break;
            if (err == WSAENOTSOCK || err == WSAESHUTDOWN)
                result = ft_fail(e, FT_EEOF, EPIPE, "UDP endpoint %s: its socket is gone", d->name);
            else
                result = ft_fail_os(e, err, "receiving on UDP endpoint %s failed", d->name);
            break;
        }
        ft_atomic_add64(&u->info.rx_calls, 1);
        ft_atomic_add64(&u->info.rx_messages, 1);
        if (!uro || len == 0) { /* an empty datagram is a datagram */
            ft_udp_append(b, buf, len, &from);
            n++;
            continue;
        }
        ft_udp_train t = {.full = len, .copied = len, .seg = seg, .max = u->max_datagram};
        if (ft_udp_train_malformed(&t, has_seg, u->max_payload)) {
            /* its datagrams cannot be told apart: the unit is dropped, and URO trusted no more */
            ft_atomic_add64(&u->info.gro_malformed, 1);
            uro_off(u);
            continue;
        }
        if (ft_udp_train_coalesced(&t))
            ft_atomic_add64(&u->info.gro_messages, 1);
        u->os.got = len;
        u->os.off = 0;
        u->os.seg = seg;
        u->os.from = from;
    }
    ft_mutex_unlock(u->rx_lock);
    return n > 0 ? n : result;
}

/* ---- send ----------------------------------------------------------------------------------------------- */

/* One message of k datagrams (k > 1: a USO run of pkts[0]'s segment size) to `to` (NULL: the connected peer).
 * 0, or the WSA error. */
static int send_message(udp_dev *u, const ft_pkt *pkts, uint32_t k, udp_name *to, int tolen)
{
    if (!ft_atomic_load(&u->os.sendmsg_on)) { /* k is 1 here: runs need WSASendMsg */
        int r = sendto(u->fd, (const char *)pkts[0].data, (int)pkts[0].len, 0, to ? &to->sa : NULL, tolen);
        return r == SOCKET_ERROR ? WSAGetLastError() : 0;
    }
    uint64_t ctrl[(WSA_CMSG_SPACE(sizeof(DWORD)) + 7) / 8];
    WSAMSG m;
    memset(&m, 0, sizeof(m));
    for (uint32_t j = 0; j < k; j++) {
        u->os.tx_bufs[j].buf = (char *)pkts[j].data;
        u->os.tx_bufs[j].len = (ULONG)pkts[j].len;
    }
    m.name = to ? &to->sa : NULL;
    m.namelen = to ? tolen : 0;
    m.lpBuffers = u->os.tx_bufs;
    m.dwBufferCount = k;
    if (k > 1) {
        memset(ctrl, 0, sizeof(ctrl));
        WSACMSGHDR *c = (WSACMSGHDR *)ctrl;
        c->cmsg_len = WSA_CMSG_LEN(sizeof(DWORD));
        c->cmsg_level = IPPROTO_UDP;
        c->cmsg_type = UDP_SEND_MSG_SIZE;
        DWORD seg = (DWORD)pkts[0].len;
        memcpy(WSA_CMSG_DATA(c), &seg, sizeof(seg));
        m.Control.buf = (char *)ctrl;
        m.Control.len = (ULONG)WSA_CMSG_SPACE(sizeof(DWORD));
    }
    DWORD done = 0;
    return WSASendMsg(u->fd, &m, 0, &done, NULL, NULL) == SOCKET_ERROR ? WSAGetLastError() : 0;
}

/* Errors a segmented send gets where USO is not (or no longer) there. */
static int is_uso_refusal(int err)
{
    return err == WSAEINVAL || err == WSAEOPNOTSUPP || err == WSAEMSGSIZE || err == WSAENOPROTOOPT;
}

/* At most WIN_MAX_SENDS messages; the return convention of ft_udp_os_send_some. */
int ft_udp_os_send_some(ft_device *d, const ft_pkt *pkts, uint32_t n, const ft_endpoint *to, uint32_t to_count,
                        uint32_t offset, uint32_t *sent, uint64_t *bytes, ft_err *e)
{
    udp_dev *u = U(d);
    uint32_t i = 0, calls = 0;
    int icmp = 0, result = 0;
    *sent = 0;
    *bytes = 0;
    ft_mutex_lock(u->tx_lock);
    while (i < n && calls++ < WIN_MAX_SENDS) {
        const ft_endpoint *dst = !to ? NULL : to_count == 1 ? to : to + offset + i;
        int uso = ft_atomic_load(&u->gso) && ft_atomic_load(&u->os.sendmsg_on);
        ft_udp_run_limits lim = {.max_segments = uso ? FT_UDP_GSO_MAX_SEGMENTS : 1,
                                 .max_segment = (uint32_t)ft_atomic_load(&u->gso_max_segment),
                                 .max_total = u->max_payload,
                                 .short_tail = 0};
        uint64_t total;
        uint32_t k = ft_udp_run(pkts + i, n - i, to_count > 1 ? dst : NULL, &lim, &total);
        udp_name name;
        int nl = dst ? ft_udp_name_from_endpoint(u->family, dst, &name) : 0;
        int err = send_message(u, pkts + i, k, dst ? &name : NULL, nl);
        ft_atomic_add64(&u->info.tx_calls, 1);
        if (!err) {
            ft_atomic_add64(&u->info.tx_messages, 1);
            if (k > 1)
                ft_atomic_add64(&u->info.gso_messages, 1);
            *sent += k;
            *bytes += total;
            i += k;
            continue;
        }
        if (k > 1 && is_uso_refusal(err)) { /* this run again, a datagram per message; USO no more */
            ft_atomic_add64(&u->info.gso_fallbacks, 1);
            ft_atomic_store(&u->gso, 0);
            continue;
        }
        if (err == WSAEOPNOTSUPP && ft_atomic_load(&u->os.sendmsg_on)) {
            ft_atomic_store(&u->os.sendmsg_on, 0);
            ft_atomic_add64(&u->info.message_fallbacks, 1);
            continue;
        }
        if (err == WSAEWOULDBLOCK || err == WSAENOBUFS) {
            result = i > 0 ? 0 : FT_EFULL;
            break;
        }
        if (err == WSAECONNRESET && icmp++ < ICMP_RETRIES) {
            ft_atomic_add64(&u->info.rx_icmp_errors, 1);
            continue;
        }
        if (err == WSAECONNRESET || err == WSAEHOSTUNREACH || err == WSAENETUNREACH || err == WSAEADDRNOTAVAIL ||
            err == WSAEACCES || err == WSAENETDOWN) {
            ft_atomic_add64(&u->info.tx_unreachable, k);
            i += k;
            continue;
        }
        if (i > 0)
            break;
        result = err == WSAENOTSOCK ? ft_fail(e, FT_EEOF, EPIPE, "UDP endpoint %s: its socket is gone", d->name)
                                    : ft_fail_os(e, err, "sending on UDP endpoint %s failed", d->name);
        break;
    }
    ft_mutex_unlock(u->tx_lock);
    if (result < 0)
        return result;
    return i > 0 ? (int)i : FT_EFULL;
}

ft_handle ft_udp_os_wait_handle(udp_dev *u, int dir, int *poll_out)
{
    (void)dir;
    *poll_out = 0; /* the socket's event object is signalled */
    return u->os.ev;
}

void ft_udp_os_release(udp_dev *u)
{
    if (u->fd != INVALID_SOCKET)
        closesocket(u->fd);
    if (u->os.ev != WSA_INVALID_EVENT)
        WSACloseEvent(u->os.ev);
    u->fd = INVALID_SOCKET;
    u->os.ev = WSA_INVALID_EVENT;
    free(u->os.unit);
    u->os.unit = NULL;
}

int ft_udp_os_family(ft_sock fd)
{
    int type = 0;
    socklen_t_ l = (socklen_t_)sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, (char *)&type, &l) != 0 || type != SOCK_DGRAM)
        return 0;
    WSAPROTOCOL_INFOW info;
    l = (socklen_t_)sizeof(info);
    if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL_INFOW, (char *)&info, &l) != 0 || info.iProtocol != IPPROTO_UDP)
        return 0;
    int domain = info.iAddressFamily;
    return domain == AF_INET || domain == AF_INET6 ? domain : 0;
}

/* Asks for a socket buffer and returns what the socket reports it got. */
static uint32_t socket_buffer(ft_sock fd, int option, uint32_t size)
{
    int v = (int)size, got = 0;
    socklen_t_ l = (socklen_t_)sizeof(got);
    setsockopt(fd, SOL_SOCKET, option, (const char *)&v, sizeof(v));
    return getsockopt(fd, SOL_SOCKET, option, (char *)&got, &l) == 0 && got > 0 ? (uint32_t)got : 0;
}

int ft_udp_os_setup(udp_dev *u, ft_sock fd, const ft_udp_params *p, ft_err *e)
{
    u->rcvbuf = socket_buffer(fd, SO_RCVBUF, p->rcvbuf ? p->rcvbuf : FT_UDP_WIN_DEFAULT_BUF);
    u->sndbuf = socket_buffer(fd, SO_SNDBUF, p->sndbuf ? p->sndbuf : FT_UDP_WIN_DEFAULT_BUF);

    GUID id = WSAID_WSARECVMSG;
    LPFN_WSARECVMSG fn = NULL;
    DWORD bytes = 0;
    if (WSAIoctl(fd, SIO_GET_EXTENSION_FUNCTION_POINTER, &id, sizeof(id), &fn, sizeof(fn), &bytes, NULL, NULL) == 0 &&
        fn) {
        u->os.recvmsg = fn;
        ft_atomic_store(&u->os.recvmsg_on, !p->per_datagram);
    }
    ft_atomic_store(&u->os.sendmsg_on, !p->per_datagram);

    /* USO: offered where the option can be read. Never set on the socket (see the top of the file). */
    DWORD v = 0;
    socklen_t_ l = (socklen_t_)sizeof(v);
    u->gso_supported = getsockopt(fd, IPPROTO_UDP, UDP_SEND_MSG_SIZE, (char *)&v, &l) == 0;
    ft_atomic_store(&u->gso, p->gso && u->gso_supported && !p->per_datagram);

    /* URO: asked for on this socket, or (not wanted) switched off, as a socket handed to us may have it on; it
     * needs WSARecvMsg for the segment size. */
    DWORD want = p->gro && u->os.recvmsg && !p->per_datagram ? URO_REQUEST : 0;
    u->gro_supported = setsockopt(fd, IPPROTO_UDP, UDP_RECV_MAX_COALESCED_SIZE, (const char *)&want,
                                  sizeof(want)) == 0;
    if (want && u->gro_supported) {
        u->os.unit = malloc(URO_UNIT);
        if (!u->os.unit)
            return ft_fail(e, FT_ENOMEM, ENOMEM, "out of memory for a UDP endpoint's receive buffer");
        u->os.unit_size = URO_UNIT;
        ft_atomic_store(&u->gro, 1);
    }

    u->os.ev = WSACreateEvent();
    if (u->os.ev == WSA_INVALID_EVENT)
        return ft_fail_os(e, WSAGetLastError(), "could not create the socket's event");
    if (WSAEventSelect(fd, u->os.ev, FD_READ | FD_WRITE) != 0) /* also makes the socket non-blocking */
        return ft_fail_os(e, WSAGetLastError(), "could not attach an event to the socket");
    return FT_OK;
}

#else
typedef int ft_udp_win_is_windows_only; /* ISO C wants a translation unit to declare something */
#endif

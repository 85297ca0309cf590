/* udp/ft_udp_win.c - the UDP endpoint's system calls on Windows: the per-datagram path, recvfrom/sendto in C
 * straight into and out of the batch, with the socket in event-select mode so that the reader waits on its event
 * together with its stop event. (USO/URO, the Windows segmentation offloads, are not used yet.) */
#ifdef _WIN32
#include "udp/ft_udp_internal.h"

#define WIN_MAX_SENDS 64u /* datagrams per send call (bounds the lock hold) */

void ft_udp_os_init(udp_dev *u) { u->os.ev = WSA_INVALID_EVENT; }

/* ---- receive -------------------------------------------------------------------------------------------- */

/* Windows: one recvfrom per datagram, straight into the batch. WSAEMSGSIZE says the datagram was larger than
 * what we asked for (the rest is gone): dropped and counted. WSAECONNRESET is an ICMP port unreachable for an
 * earlier datagram. */
int ft_udp_os_recv(ft_device *d, ft_batch *b, ft_err *e)
{
    udp_dev *u = U(d);
    int n = 0, icmp = 0, result = FT_EAGAIN;
    ft_mutex_lock(u->rx_lock);
    WSAResetEvent(u->os.ev); /* before trying: what arrives after the attempt sets it again */
    while (b->count < b->max && b->cap - b->used >= u->max_datagram) {
        udp_name from;
        int fl = (int)sizeof(from);
        int r = recvfrom(u->fd, (char *)b->data + b->used, (int)u->max_datagram, 0, &from.sa, &fl);
        if (r == SOCKET_ERROR) {
            int err = WSAGetLastError();
            if (err == WSAEWOULDBLOCK)
                break;
            if (err == WSAEMSGSIZE) {
                ft_atomic_add64(&u->info.rx_dropped_trunc, 1);
                ft_atomic_add64(&d->stats.rx_dropped_oversize, 1);
                continue;
            }
            if ((err == WSAECONNRESET || err == WSAENETRESET || err == WSAEHOSTUNREACH) && icmp++ < ICMP_RETRIES) {
                ft_atomic_add64(&u->info.rx_icmp_errors, 1);
                continue;
            }
            if (n > 0 || err == WSAECONNRESET || err == WSAENETRESET || err == WSAEHOSTUNREACH)
                break;
            if (err == WSAENOTSOCK || err == WSAESHUTDOWN)
                result = ft_fail(e, FT_EEOF, EPIPE, "UDP endpoint %s: its socket is gone", d->name);
            else
                result = ft_fail_os(e, err, "receiving on UDP endpoint %s failed", d->name);
            break;
        }
        ft_atomic_add64(&u->info.rx_calls, 1);
        ft_atomic_add64(&u->info.rx_messages, 1);
        ft_udp_append(b, b->data + b->used, (uint32_t)r, &from);
        n++;
    }
    ft_mutex_unlock(u->rx_lock);
    return n > 0 ? n : result;
}
/* ---- send ----------------------------------------------------------------------------------------------- */

/* Windows: one sendto per datagram (at most WIN_MAX_SENDS per call); same return convention. */
int ft_udp_os_send_some(ft_device *d, const ft_pkt *pkts, uint32_t n, const ft_endpoint *to, uint32_t to_count,
                     uint32_t offset, uint32_t *sent, uint64_t *bytes, ft_err *e)
{
    udp_dev *u = U(d);
    uint32_t i = 0;
    int icmp = 0, result = 0;
    *sent = 0;
    *bytes = 0;
    ft_mutex_lock(u->tx_lock);
    while (i < n && i < WIN_MAX_SENDS) {
        const ft_endpoint *dst = !to ? NULL : to_count == 1 ? to : to + offset + i;
        udp_name name;
        int nl = dst ? ft_udp_name_from_endpoint(u->family, dst, &name) : 0;
        int r = sendto(u->fd, (const char *)pkts[i].data, (int)pkts[i].len, 0, dst ? &name.sa : NULL, nl);
        ft_atomic_add64(&u->info.tx_calls, 1);
        if (r != SOCKET_ERROR) {
            ft_atomic_add64(&u->info.tx_messages, 1);
            (*sent)++;
            *bytes += pkts[i].len;
            i++;
            continue;
        }
        int err = WSAGetLastError();
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
            ft_atomic_add64(&u->info.tx_unreachable, 1);
            i++;
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

int ft_udp_os_setup(udp_dev *u, ft_sock fd, const ft_udp_params *p, ft_err *e)
{
    (void)p;
    u->gso_supported = u->gro_supported = 0; /* USO/URO: not used yet */
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

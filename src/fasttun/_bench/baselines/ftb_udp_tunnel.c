/* ftb_udp_tunnel.c - the C per-packet IP-over-UDP tunnel, the floor fasttun's tunnel is measured against: one
 * read(2) from the TUN device and one send(2) on a connected UDP socket per packet in one thread, one recv(2)
 * and one write(2) per datagram in another. No batching, no offload. It creates the TUN device (the harness
 * gives it addresses and brings it up with `ip`), prints "ready", runs until its standard input closes and
 * prints one JSON line with its counts.
 *
 *   ftb_udp_tunnel NAME MTU BIND_IP BIND_PORT PEER_IP PEER_PORT */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static int tun_fd, udp_fd;
static atomic_llong to_udp, to_tun, errors;

static void *tun_to_udp(void *arg)
{
    (void)arg;
    static unsigned char buf[65536];
    for (;;) {
        ssize_t r = read(tun_fd, buf, sizeof(buf));
        if (r <= 0) {
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0 && errno == EBADF)
                return NULL;
            errors++;
            continue;
        }
        if (send(udp_fd, buf, (size_t)r, 0) == r)
            to_udp++;
        else
            errors++;
    }
}

static void *udp_to_tun(void *arg)
{
    (void)arg;
    static unsigned char buf[65536];
    for (;;) {
        ssize_t r = recv(udp_fd, buf, sizeof(buf), 0);
        if (r <= 0) {
            if (r < 0 && errno == EBADF)
                return NULL;
            if (r < 0 && errno != EINTR)
                errors++;
            continue;
        }
        if (write(tun_fd, buf, (size_t)r) == r)
            to_tun++;
        else
            errors++;
    }
}

static int address(const char *ip, const char *port, struct sockaddr_in *out)
{
    memset(out, 0, sizeof(*out));
    out->sin_family = AF_INET;
    out->sin_port = htons((unsigned short)atoi(port));
    return inet_pton(AF_INET, ip, &out->sin_addr) == 1 ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: ftb_udp_tunnel NAME MTU BIND_IP BIND_PORT PEER_IP PEER_PORT\n");
        return 2;
    }
    struct sockaddr_in here, there;
    if (address(argv[3], argv[4], &here) || address(argv[5], argv[6], &there)) {
        fprintf(stderr, "bad address\n");
        return 2;
    }
    tun_fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", argv[1]);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    if (tun_fd < 0 || ioctl(tun_fd, TUNSETIFF, &ifr) != 0) {
        perror("tun");
        return 1;
    }
    int ctl = socket(AF_INET, SOCK_DGRAM, 0);
    ifr.ifr_mtu = atoi(argv[2]);
    if (ioctl(ctl, SIOCSIFMTU, &ifr) != 0)
        perror("mtu");
    close(ctl);
    udp_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int size = 8 << 20;
    setsockopt(udp_fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size));
    setsockopt(udp_fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size));
    if (bind(udp_fd, (struct sockaddr *)&here, sizeof(here)) || connect(udp_fd, (struct sockaddr *)&there, sizeof(there))) {
        perror("udp");
        return 1;
    }
    pthread_t t1, t2;
    pthread_create(&t1, NULL, tun_to_udp, NULL);
    pthread_create(&t2, NULL, udp_to_tun, NULL);
    printf("ready\n");
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof(line), stdin))
        ;
    printf("{\"to_udp\": %lld, \"to_tun\": %lld, \"errors\": %lld}\n", (long long)to_udp, (long long)to_tun,
           (long long)errors);
    fflush(stdout);
    _exit(0); /* the threads block in read/recv: leave without joining them */
}

/* ftb_sendmmsg.c - the benchmark's fast sender: UDP datagrams to one address with sendmmsg(2), as many as
 * asked for or for as long as asked, from inside a network namespace. Used to prefill a TUN device's queue
 * (rx scenario) and to drive it live. Prints one JSON line: {"sent": N, "seconds": S}. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ftb.h"

#define MAX_BATCH 1024

static void usage(void)
{
    fprintf(stderr, "usage: ftb_sendmmsg -d IPV4 [-p PORT] [-s IP_PACKET_BYTES] [-c COUNT] [-t SECONDS] "
                    "[-b BATCH] [-n NETNS_PATH] [-a CPU]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int cpu = -1;
    const char *dst = NULL, *netns = NULL;
    int port = 9, size = 64, batch = 256, opt;
    long long count = 1000000;
    double seconds = 10.0;
    while ((opt = getopt(argc, argv, "d:p:s:c:t:b:n:a:")) != -1) {
        switch (opt) {
        case 'd': dst = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 's': size = atoi(optarg); break;
        case 'c': count = atoll(optarg); break;
        case 't': seconds = atof(optarg); break;
        case 'b': batch = atoi(optarg); break;
        case 'n': netns = optarg; break;
        case 'a': cpu = atoi(optarg); break;
        default: usage();
        }
    }
    pin_to_cpu(cpu);
    if (!dst || size < 28 || size > 65535 || batch < 1 || batch > MAX_BATCH || count < 1 || seconds <= 0)
        usage();
    if (netns) {
        int fd = open(netns, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
            perror("ftb_sendmmsg: entering the network namespace");
            return 1;
        }
        close(fd);
    }
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        perror("ftb_sendmmsg: socket");
        return 1;
    }
    int sndbuf = 4 << 20;
    setsockopt(s, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    struct sockaddr_in to;
    memset(&to, 0, sizeof to);
    to.sin_family = AF_INET;
    to.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, dst, &to.sin_addr) != 1)
        usage();
    if (connect(s, (struct sockaddr *)&to, sizeof to) != 0) {
        perror("ftb_sendmmsg: connect");
        return 1;
    }
    size_t payload = (size_t)size - 28; /* IPv4 header 20 + UDP header 8 */
    static char data[65536];
    memset(data, 0xa5, sizeof data);
    static struct mmsghdr msgs[MAX_BATCH];
    static struct iovec iov[MAX_BATCH];
    for (int i = 0; i < batch; i++) {
        iov[i].iov_base = data;
        iov[i].iov_len = payload;
        memset(&msgs[i], 0, sizeof msgs[i]);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    long long sent = 0, errors = 0;
    double t0 = now(), deadline = t0 + seconds, t = t0;
    while (sent < count) {
        int n = (int)(count - sent < batch ? count - sent : batch);
        int r = sendmmsg(s, msgs, (unsigned)n, 0);
        if (r > 0) {
            sent += r;
        } else if (r < 0 && errno != EINTR) {
            /* ENOBUFS and the like: the stack is full; count it and go on until the deadline. */
            errors++;
        }
        t = now();
        if (t >= deadline)
            break;
    }
    t = now();
    printf("{\"sent\": %lld, \"errors\": %lld, \"seconds\": %.6f}\n", sent, errors, t - t0);
    return 0;
}

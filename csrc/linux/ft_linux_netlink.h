/* linux/ft_linux_netlink.h - IPv4/IPv6 addresses through rtnetlink (what `ip address` does), without a shell. */
#ifndef FT_LINUX_NETLINK_H
#define FT_LINUX_NETLINK_H

#include "core/ft_device.h"

/* Every call takes the NETLINK_ROUTE socket `s` to talk through: opened where the device was created, it speaks
 * to that network namespace whichever namespace the calling thread is in. One request at a time per socket. */
int ft_netlink_open(ft_err *e);

/* Adds (add=1) or removes (add=0) an address on interface ifindex; `name` is only for messages. */
int ft_netlink_address(int s, unsigned ifindex, const char *name, const ft_addr *a, int add, ft_err *e);
/* Lists the addresses of interface ifindex; *n is the total (may exceed max; only max are written). */
int ft_netlink_list_addresses(int s, unsigned ifindex, ft_addr *out, uint32_t max, uint32_t *n, ft_err *e);

/* Adds (add=1) or removes a route through interface ifindex. */
int ft_netlink_route(int s, unsigned ifindex, const char *name, int add, const ft_route *r, ft_err *e);

/* Waits up to timeout_ms until the kernel accepts packets for the address (its local route exists; IPv6 adds
 * it asynchronously, after the address appears). FT_OK, FT_ETIMEDOUT or a failure. */
int ft_netlink_wait_local(int s, const ft_addr *a, uint32_t timeout_ms, ft_err *e);

/* The kernel's drop counters of the interface, from our side: packets it dropped on the way to us (its queue
 * was full) and packets we wrote that it dropped. */
int ft_netlink_link_drops(int s, unsigned ifindex, uint64_t *os_rx_dropped, uint64_t *os_tx_dropped, ft_err *e);

#endif

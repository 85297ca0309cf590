/* wintun/ft_wintun_config.h - configuring one network interface through the IP Helper API, keyed by its LUID
 * (as linux/ft_linux_netlink.h takes a socket and an interface index). Nothing here knows the Wintun session
 * or ft_device; `name` is what the messages call the interface. Every function returns FT_OK or a failure in
 * *e; a call this system's iphlpapi.dll lacks (Wine lacks most) is FT_EUNSUPPORTED naming it. */
#ifndef FT_WINTUN_CONFIG_H
#define FT_WINTUN_CONFIG_H

#ifdef _WIN32
#include <winsock2.h>
#include <ws2ipdef.h>
#include <iphlpapi.h>

#include "core/ft_device.h" /* ft_err, ft_addr, ft_route */

/* The MTU of the IPv4 interface, else of the IPv6 one. */
int ft_wintun_cfg_get_mtu(NET_LUID luid, const char *name, uint32_t *mtu, ft_err *e);
/* Both families' MTU (IPv6 only from 1280 bytes up, which Windows requires). */
int ft_wintun_cfg_set_mtu(NET_LUID luid, const char *name, uint32_t mtu, ft_err *e);
int ft_wintun_cfg_index(NET_LUID luid, const char *name, uint32_t *index, ft_err *e);
int ft_wintun_cfg_is_up(NET_LUID luid, const char *name, int *up, ft_err *e);
/* add (1) or remove (0) a unicast address, or a route. */
/* Called through ft_device_address and ft_device_route, which checked the family and prefix. */
int ft_wintun_cfg_address(NET_LUID luid, const char *name, int add, const ft_addr *a, ft_err *e);
int ft_wintun_cfg_route(NET_LUID luid, const char *name, int add, const ft_route *r, ft_err *e);
/* Up to max addresses into out; *n is how many there are, even beyond max. */
int ft_wintun_cfg_list_addresses(NET_LUID luid, const char *name, ft_addr *out, uint32_t max, uint32_t *n,
                                 ft_err *e);
/* The static DNS servers of both families (an empty list clears them); Windows 10 2004 and later. */
int ft_wintun_cfg_dns(NET_LUID luid, const char *name, const ft_addr *servers, uint32_t n, ft_err *e);
#endif

#endif

# C declarations of the core (csrc/), kept apart from the wrappers in _core.pyx.
from libc.stddef cimport wchar_t
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t


cdef extern from "core/ft_os.h" nogil:
    ctypedef struct ft_event:
        pass
    ctypedef int ft_atomic_int   # _Atomic int, or Windows' volatile LONG: plain reads and writes are atomic
    uint64_t ft_now_ns()


cdef extern from "core/ft_limits.h" nogil:
    ctypedef struct ft_limit:
        const char *name
        int64_t low, high
        const char *unit
        int pow2


cdef extern from "core/ft_device.h" nogil:
    enum:
        FT_OK
        FT_EAGAIN
        FT_ETIMEDOUT
        FT_EWOKEN
        FT_ECLOSED
        FT_EFULL
        FT_EINVAL
        FT_ESYS
        FT_ENOMEM
        FT_EPACKET
        FT_EUNSUPPORTED
        FT_EEOF
        FT_ECORRUPT
        FT_EREFUSED
        FT_ALL_QUEUES
        FT_FULL_DROP
        FT_FULL_WAIT
        FT_FULL_RAISE
        FT_MAX_PACKET
        FT_MAX_BATCH
        FT_MIN_MTU

    ctypedef struct ft_err:
        int status
        int errnum
        long oserr
        long index
        uint32_t sent
        char msg[256]

    int ft_limit_check(const ft_limit *l, int64_t v, ft_err *e)
    int ft_limit_refuse(const ft_limit *l, const char *value, ft_err *e)
    const ft_limit ft_limit_mtu, ft_limit_max_packets, ft_limit_metric

    ctypedef struct ft_endpoint:
        uint8_t family
        uint8_t reserved
        uint16_t port
        uint32_t scope_id
        uint8_t addr[16]

    ctypedef struct ft_batch:
        uint8_t *data
        size_t cap
        uint32_t *offsets
        uint32_t *lengths
        uint32_t max
        uint32_t count
        size_t used
        uint8_t *vnet
        ft_endpoint *addrs

    enum:
        FT_VNET_HDR_SIZE
        FT_MAX_SUPER_PACKET

    ctypedef struct ft_pkt:
        const uint8_t *data
        size_t len

    # Counters come by index, named by the C core's own list (FT_STATS_FIELDS): nothing to spell out here.
    enum:
        FT_STATS_COUNT
    ctypedef struct ft_stats:
        uint64_t values[FT_STATS_COUNT]
    const char *const ft_stats_names[]

    ctypedef struct ft_addr:
        int family
        uint8_t prefix
        uint8_t bytes[16]

    ctypedef struct ft_route:
        int family
        uint8_t prefix
        uint8_t dest[16]
        int has_gateway
        uint8_t gateway[16]
        uint32_t metric

    ctypedef struct ft_backend_ops:
        const char *name

    ctypedef struct ft_device:
        const ft_backend_ops *ops
        int nqueues
        uint32_t max_packet
        int remote_csum
        char name[64]

    ft_limit ft_device_queue_limit(const ft_device *d)
    size_t ft_batch_arena_size(uint32_t packets, uint32_t max_packet)
    int ft_device_recv(ft_device *d, int q, ft_batch *b, int timeout_ms, ft_err *e)
    int ft_device_send(ft_device *d, int q, const ft_pkt *pkts, uint32_t n, int policy, int timeout_ms, ft_err *e)
    void ft_device_count_tx_drops(ft_device *d, uint64_t n)
    int ft_device_send_vnet(ft_device *d, int q, const ft_pkt *pkts, const uint8_t *hdrs, uint32_t n, int policy,
                            int timeout_ms, ft_err *e)
    void ft_device_shutdown(ft_device *d)
    void ft_device_forget_after_fork(ft_device *d)
    void ft_device_close(ft_device *d)
    void ft_device_free(ft_device *d)
    void ft_device_get_stats(ft_device *d, ft_stats *out)
    int ft_device_get_mtu(ft_device *d, uint32_t *mtu, ft_err *e)
    int ft_device_set_mtu(ft_device *d, uint32_t mtu, ft_err *e)
    int ft_device_set_up(ft_device *d, int up, ft_err *e)
    int ft_device_is_up(ft_device *d, int *up, ft_err *e)
    int ft_device_get_index(ft_device *d, uint32_t *index, ft_err *e)
    int ft_device_address(ft_device *d, int add, const ft_addr *a, ft_err *e)
    int ft_device_list_addresses(ft_device *d, ft_addr *out, uint32_t max, uint32_t *n, ft_err *e)
    int ft_device_get_txqueuelen(ft_device *d, uint32_t *len, ft_err *e)
    int ft_device_set_txqueuelen(ft_device *d, uint32_t len, ft_err *e)
    int ft_device_route(ft_device *d, int add, const ft_route *r, ft_err *e)
    int ft_device_os_drops(ft_device *d, uint64_t *rx_dropped, uint64_t *tx_dropped, ft_err *e)
    int ft_packet_check(const uint8_t *p, size_t len, uint32_t mtu, ft_err *e)


cdef extern from "core/ft_reader.h" nogil:
    ctypedef struct ft_reader_config:
        uint32_t batch_size
        uint32_t spin_us
        int adaptive
        uint32_t adaptive_pps
        uint32_t pipeline
        void (*thread_start)(void *user) noexcept nogil
        void (*thread_end)(void *user) noexcept nogil

    enum:
        FT_READER_DEFAULT_SPIN_US
        FT_READER_MAX_PIPELINE
        FT_READER_DEFAULT_ADAPTIVE_PPS
        FT_READER_MAX_SPIN_US
        FT_READER_RUNNING
        FT_READER_STOPPED
        FT_READER_CALLBACK_STOPPED
        FT_READER_FAILED

    ctypedef int (*ft_batch_fn)(void *user, ft_batch *b) noexcept
    enum:
        FT_READER_DECLINED

    enum:
        FT_READER_STATS_COUNT
    ctypedef struct ft_reader_stats:
        uint64_t values[FT_READER_STATS_COUNT]
    const char *const ft_reader_stats_names[]

    ctypedef struct ft_reader:
        pass

    const ft_limit ft_limit_batch_size, ft_limit_spin_us, ft_limit_pipeline, ft_limit_adaptive_pps

    ft_reader *ft_reader_start(ft_device *d, int q, const ft_reader_config *cfg, ft_batch *b, ft_batch_fn fn,
                               void *user, ft_err *e)
    void ft_reader_request_stop(ft_reader *r)
    int ft_reader_stopping(ft_reader *r)
    int ft_reader_joined(ft_reader *r)
    int ft_reader_join(ft_reader *r, int timeout_ms)
    int ft_reader_state(ft_reader *r)
    void ft_reader_error(ft_reader *r, ft_err *out)
    void ft_reader_get_stats(ft_reader *r, ft_reader_stats *out)
    int ft_reader_is_current_thread(ft_reader *r)
    void ft_reader_free(ft_reader *r)
    void ft_reader_forget_after_fork(ft_reader *r)
    int ft_reader_on_reader_thread()


cdef extern from "core/ft_forward.h" nogil:
    ctypedef struct ft_forward:
        pass
    ft_forward *ft_forward_new(ft_device *to, int q, uint32_t max, int super, int policy, int timeout_ms, ft_err *e)
    void ft_forward_free(ft_forward *f)
    int ft_forward_batch(void *user, ft_batch *b)
    void ft_forward_record(ft_forward *f, int on)
    uint32_t ft_forward_went(const ft_forward *f, const uint32_t **indices)
    void ft_forward_error(const ft_forward *f, ft_err *out)


# How each backend is opened, and what only it has; every name exists on every platform (elsewhere they fail with
# FT_EUNSUPPORTED), so that one wrapper serves them all.
cdef extern from "core/ft_device.h" nogil:
    enum:
        FT_OPEN_CREATE
        FT_OPEN_EXISTING
        FT_OPEN_ANY


cdef extern from "pair/ft_pair.h" nogil:
    enum:
        FT_PAIR_DEFAULT_CAPACITY
        FT_PAIR_DEFAULT_CAPACITY_BYTES
        FT_PAIR_MAX_CAPACITY
        FT_PAIR_MIN_CAPACITY_BYTES
        FT_PAIR_MAX_CAPACITY_BYTES

    const ft_limit ft_limit_capacity, ft_limit_capacity_bytes

    int ft_memory_pair(uint32_t mtu, uint32_t capacity, uint32_t capacity_bytes, ft_device **a, ft_device **b,
                       ft_err *e)


cdef extern from "linux/ft_linux.h" nogil:
    enum:
        FT_TUN_F_CSUM
        FT_TUN_F_TSO4
        FT_TUN_F_TSO6
        FT_TUN_F_TSO_ECN
        FT_TUN_F_USO4
        FT_TUN_F_USO6
        FT_LINUX_MAX_QUEUES

    ctypedef struct ft_linux_params:
        const char *name
        int queues
        int persist
        int open_mode
        int auto_txqueuelen
        uint32_t mtu
        const char *dev_path
        int offload
        int remote_csum

    enum:
        FT_OFFLOAD_OFF
        FT_OFFLOAD_SEGMENTS
        FT_OFFLOAD_SUPER

    const ft_limit ft_limit_queues, ft_limit_txqueuelen

    int ft_linux_open(const ft_linux_params *p, ft_device **out, ft_err *e)
    int ft_linux_fd(ft_device *d, int q, ft_err *e)
    int ft_linux_features(uint32_t *flags, ft_err *e)
    int ft_linux_set_persist(ft_device *d, int persist, ft_err *e)
    uint32_t ft_linux_offloads(ft_device *d, int *mode)
    int ft_linux_txqueuelen_grows(ft_device *d)


cdef extern from "wintun/ft_wintun.h" nogil:
    enum:
        FT_WINTUN_DEFAULT_RING_CAPACITY
        FT_WINTUN_MIN_RING_CAPACITY
        FT_WINTUN_MAX_RING_CAPACITY
        FT_WINTUN_MAX_NAME
        FT_WINTUN_DRIVER_NOT_LOADED
        FT_WINTUN_AUTO_RING
        FT_WINTUN_COALESCE
        FT_WINTUN_REMOTE_CSUM

    ctypedef struct ft_wintun_params:
        const char *name
        const char *tunnel_type
        const uint8_t *guid
        uint32_t ring_capacity
        int open_mode
        uint32_t mtu
        uint32_t flags

    ctypedef void (*ft_wintun_log_fn)(int level, uint64_t timestamp_100ns, const char *utf8_msg) noexcept

    const ft_limit ft_limit_ring_capacity

    int ft_wintun_load(const wchar_t *path_or_null, ft_err *e)
    int ft_wintun_loaded()
    int ft_wintun_driver_version(uint32_t *version, ft_err *e)
    int ft_wintun_delete_driver(ft_err *e)
    void ft_wintun_set_logger(ft_wintun_log_fn fn)
    int ft_wintun_open(const ft_wintun_params *p, ft_device **out, ft_err *e)
    ctypedef struct ft_wintun_info:
        uint64_t luid
        int created
        uint32_t ring_capacity, ring_grows
    void ft_wintun_get_info(ft_device *d, ft_wintun_info *out)
    int ft_wintun_guid(ft_device *d, uint8_t guid[16], ft_err *e)
    int ft_wintun_set_dns(ft_device *d, const ft_addr *servers, uint32_t n, ft_err *e)


cdef extern from "offload/ft_offload.h" nogil:
    enum:
        FT_RCSUM_HDR_SIZE
        FT_RCSUM_MAGIC


cdef extern from "icmp/ft_icmp.h" nogil:
    uint16_t ft_inet_checksum(const uint8_t *data, size_t len, uint32_t initial)
    size_t ft_icmp_echo_reply(const uint8_t *p, size_t len, uint8_t *out, size_t cap)


cdef extern from "udp/ft_udp.h" nogil:
    enum:
        FT_UDP_MAX_PAYLOAD4
        FT_UDP_MAX_PAYLOAD6
        FT_UDP_GSO_MAX_SEGMENTS
        FT_UDP_BUF_MIN
        FT_UDP_BUF_MAX
        FT_UDP_WIN_DEFAULT_BUF
        FT_UDP_COUNTER_COUNT
    const char *const ft_udp_counter_names[]

    ctypedef struct ft_udp_params:
        int fd
        uint32_t max_datagram
        int gso
        int gro
        uint32_t rcvbuf
        uint32_t sndbuf
        int per_datagram

    ctypedef struct ft_udp_info:
        int family
        int connected
        int gso_supported
        int gro_supported
        int gso
        int gro
        uint32_t max_datagram
        uint32_t gso_max_segment
        int message_calls
        uint32_t rcvbuf, sndbuf
        uint64_t counters[FT_UDP_COUNTER_COUNT]

    const ft_limit ft_limit_rcvbuf, ft_limit_sndbuf, ft_limit_max_datagrams, ft_limit_port
    const ft_limit *ft_udp_max_datagram_limit(int version)

    int ft_udp_open(const ft_udp_params *p, ft_device **out, ft_err *e)
    int ft_udp_fd(ft_device *d)
    int ft_udp_get_info(ft_device *d, ft_udp_info *out)
    int ft_udp_send(ft_device *d, const ft_pkt *pkts, uint32_t n, const ft_endpoint *to, uint32_t to_count,
                    int policy, int timeout_ms, ft_err *e)

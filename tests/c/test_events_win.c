/* test_events_win.c - events/ft_events_win.c under Wine (cross-compiled with mingw-w64; tests/test_events_wine.py):
 * registration and cancellation, the notification callbacks fed the rows the system would pass (through
 * ft_events_test_notify: Wine never calls them itself), the filter by LUID, the completion of what the rows
 * leave out, the bounded queue and its one overflow mark, waiting, and shutdown waking a waiting thread.
 * Producers on several threads at once check that the queue keeps each one's order and accounts for every
 * notification. */
#include <winsock2.h>
#include <windows.h>
#include <ws2ipdef.h>
#include <iphlpapi.h>
#include <string.h>

#include "events/ft_events.h"
#include "check.h"

#define LUID_A 0x0123456700000001ull /* no interface has these: the completion calls fail, as for our fake */
#define LUID_B 0x0123456700000002ull

enum { PARAM = 0, ADD = 1, DELETE_ = 2, INITIAL = 3 };

static ft_addr v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d, uint8_t prefix)
{
    ft_addr x;
    memset(&x, 0, sizeof(x));
    x.family = 4;
    x.prefix = prefix;
    x.bytes[0] = a, x.bytes[1] = b, x.bytes[2] = c, x.bytes[3] = d;
    return x;
}

static ft_addr v6_seq(uint16_t producer, uint16_t seq, uint8_t prefix)
{
    ft_addr x;
    memset(&x, 0, sizeof(x));
    x.family = 6;
    x.prefix = prefix;
    x.bytes[0] = 0xfd;
    x.bytes[12] = (uint8_t)(producer >> 8), x.bytes[13] = (uint8_t)producer;
    x.bytes[14] = (uint8_t)(seq >> 8), x.bytes[15] = (uint8_t)seq;
    return x;
}

static int notify_addr(ft_events *ev, int type, uint64_t luid, ft_addr a)
{
    ft_err e;
    return ft_events_test_notify(ev, 1, type, luid, 7, &a, 0, 0, &e);
}

static int read_all(ft_events *ev, ft_device_event *out, int max)
{
    ft_err e;
    int n = 0;
    while (n < max) {
        int r = ft_events_read(ev, out + n, max - n < 64 ? max - n : 64, &e);
        if (r == FT_EAGAIN)
            break;
        if (r < 0)
            return r;
        n += r;
    }
    return n;
}

static ft_device_event got[4 * FT_EV_QUEUE];

static void test_open_and_close(void)
{
    ft_err e;
    for (int i = 0; i < 200; i++) {
        ft_events *ev = ft_events_open_luid(LUID_A, &e);
        CHECK(ev != NULL);
        if (!ev)
            return;
        ft_events_close(ev);
    }
    ft_events *all = ft_events_open(0, &e); /* every interface */
    CHECK(all != NULL);
    ft_events_close(all);
    CHECK(ft_events_open(0x7ffffff0u, &e) == NULL && e.status == FT_ESYS);
    CHECK(strstr(e.msg, "no interface with index") != NULL);
    ft_events_close(NULL);
    ft_events_shutdown(NULL);
}

static void test_addresses_and_filter(void)
{
    ft_err e;
    ft_events *ev = ft_events_open_luid(LUID_A, &e);
    CHECK(ev != NULL);
    if (!ev)
        return;
    CHECK(ft_events_fd(ev) == -1);
    CHECK(ft_events_wait(ev, 0, &e) == FT_ETIMEDOUT);
    CHECK(ft_events_read(ev, got, 8, &e) == FT_EAGAIN);
    CHECK(notify_addr(ev, ADD, LUID_A, v4(10, 1, 2, 3, 24)) == FT_OK);
    CHECK(notify_addr(ev, ADD, LUID_B, v4(10, 9, 9, 9, 24)) == FT_OK);      /* another interface's */
    CHECK(notify_addr(ev, PARAM, LUID_A, v4(10, 1, 2, 3, 24)) == FT_OK);    /* DAD state: no event */
    CHECK(notify_addr(ev, INITIAL, LUID_A, v4(10, 1, 2, 3, 24)) == FT_OK);  /* no event */
    CHECK(notify_addr(ev, DELETE_, LUID_A, v6_seq(1, 2, 64)) == FT_OK);
    CHECK(notify_addr(ev, DELETE_, LUID_A, v6_seq(1, 3, 255)) == FT_OK);    /* a row without its prefix */
    CHECK(ft_events_wait(ev, 1000, &e) == 1);
    CHECK(ft_events_read(ev, got, 0, &e) == FT_EINVAL);
    int n = read_all(ev, got, 16);
    CHECK(n == 3);
    if (n == 3) {
        CHECK(got[0].kind == FT_EV_ADDR_ADDED && got[0].addr.family == 4 && got[0].addr.prefix == 24);
        CHECK(memcmp(got[0].addr.bytes, "\x0a\x01\x02\x03", 4) == 0 && got[0].luid == LUID_A && got[0].ifindex == 7);
        ft_addr want = v6_seq(1, 2, 64);
        CHECK(got[1].kind == FT_EV_ADDR_REMOVED && got[1].addr.family == 6 && got[1].addr.prefix == 64);
        CHECK(memcmp(got[1].addr.bytes, want.bytes, 16) == 0);
        CHECK(got[2].kind == FT_EV_ADDR_REMOVED && got[2].addr.prefix == 128); /* unknown: the full length */
    }
    /* read everything: the event is reset, a wait times out again */
    CHECK(ft_events_wait(ev, 0, &e) == FT_ETIMEDOUT);
    /* bad arguments of the hook */
    ft_addr bad = v4(1, 2, 3, 4, 8);
    bad.family = 5;
    CHECK(ft_events_test_notify(ev, 1, ADD, LUID_A, 7, &bad, 0, 0, &e) == FT_EINVAL);
    CHECK(ft_events_test_notify(ev, 2, ADD, LUID_A, 7, NULL, 0, 0, &e) == FT_EINVAL);
    CHECK(ft_events_test_notify(ev, 1, ADD, LUID_A, 7, NULL, 0, 0, &e) == FT_EINVAL);
    CHECK(ft_events_test_notify(ev, 0, 4, LUID_A, 7, NULL, 0, 0, &e) == FT_EINVAL);
    ft_events_close(ev);
}

static void test_interface_rows(void)
{
    ft_err e;
    ft_events *ev = ft_events_open_luid(LUID_A, &e);
    CHECK(ev != NULL);
    if (!ev)
        return;
    ft_addr six = v6_seq(0, 0, 0);
    CHECK(ft_events_test_notify(ev, 0, PARAM, LUID_A, 7, NULL, 1400, 1, &e) == FT_OK);
    CHECK(ft_events_test_notify(ev, 0, PARAM, LUID_A, 7, &six, 1280, 0, &e) == FT_OK);
    CHECK(ft_events_test_notify(ev, 0, PARAM, LUID_B, 8, NULL, 1300, 1, &e) == FT_OK); /* not ours */
    CHECK(ft_events_test_notify(ev, 0, INITIAL, LUID_A, 7, NULL, 1400, 1, &e) == FT_OK);
    CHECK(ft_events_test_notify(ev, 0, DELETE_, LUID_A, 7, NULL, 0, 0, &e) == FT_OK);
    int n = read_all(ev, got, 16);
    CHECK(n == 3);
    if (n == 3) {
        /* the interface cannot be asked about (it does not exist): what the row said stands */
        CHECK(got[0].kind == FT_EV_LINK && got[0].mtu == 1400 && got[0].flags == FT_EV_IFF_UP);
        CHECK(got[0].addr.family == 0 && got[0].luid == LUID_A && got[0].ifindex == 7);
        CHECK(got[1].kind == FT_EV_LINK && got[1].mtu == 1280 && got[1].flags == 0);
        /* deleted, and GetIfEntry2 knows it no more: the interface is gone */
        CHECK(got[2].kind == FT_EV_LINK_REMOVED && got[2].addr.family == 0);
    }
    ft_events_close(ev);

    /* every interface: an existing one's deletion of one family is a link change (Wine's loopback) */
    MIB_IF_TABLE2 *table = NULL;
    if (GetIfTable2(&table) == NO_ERROR && table->NumEntries > 0) {
        uint64_t luid = table->Table[0].InterfaceLuid.Value;
        ev = ft_events_open(0, &e);
        CHECK(ev != NULL);
        if (ev) {
            CHECK(ft_events_test_notify(ev, 0, DELETE_, luid, table->Table[0].InterfaceIndex, &six, 0, 0, &e) ==
                  FT_OK);
            CHECK(ft_events_test_notify(ev, 0, DELETE_, LUID_B, 9, NULL, 0, 0, &e) == FT_OK);
            n = read_all(ev, got, 16);
            CHECK(n == 2 && got[0].kind == FT_EV_LINK && got[0].luid == luid);
            CHECK(n == 2 && got[1].kind == FT_EV_LINK_REMOVED && got[1].luid == LUID_B);
            ft_events_close(ev);
        }
    } else {
        CHECK(0 && "GetIfTable2 lists no interface");
    }
    if (table)
        FreeMibTable(table);
}

static void test_overflow_mark(void)
{
    ft_err e;
    ft_events *ev = ft_events_open_luid(LUID_A, &e);
    CHECK(ev != NULL);
    if (!ev)
        return;
    int sent = FT_EV_QUEUE + 40;
    for (int i = 0; i < sent; i++)
        notify_addr(ev, ADD, LUID_A, v6_seq(0, (uint16_t)i, 64));
    int n = read_all(ev, got, 4 * FT_EV_QUEUE);
    CHECK(n == FT_EV_QUEUE);
    int in_order = 1;
    for (int i = 0; i < FT_EV_QUEUE - 1 && i < n; i++) {
        ft_addr want = v6_seq(0, (uint16_t)i, 64);
        in_order &= got[i].kind == FT_EV_ADDR_ADDED && memcmp(got[i].addr.bytes, want.bytes, 16) == 0;
    }
    CHECK(in_order);
    CHECK(n == FT_EV_QUEUE && got[n - 1].kind == FT_EV_OVERFLOW && got[n - 1].luid == LUID_A);
    CHECK(ft_events_dropped(ev) == (uint64_t)(sent - (FT_EV_QUEUE - 1)));
    /* later notifications come after the mark, and a second loss makes a second mark */
    notify_addr(ev, ADD, LUID_A, v4(10, 0, 0, 1, 8));
    n = read_all(ev, got, 8);
    CHECK(n == 1 && got[0].kind == FT_EV_ADDR_ADDED);
    for (int i = 0; i < FT_EV_QUEUE; i++)
        notify_addr(ev, ADD, LUID_A, v4(10, 0, 0, 2, 8));
    n = read_all(ev, got, 4 * FT_EV_QUEUE);
    CHECK(n == FT_EV_QUEUE && got[n - 1].kind == FT_EV_OVERFLOW && got[n - 2].kind == FT_EV_ADDR_ADDED);
    ft_events_close(ev);
}

typedef struct waiter {
    ft_events *ev;
    int timeout_ms;
    volatile LONG result;
    volatile LONG started;
} waiter;

static DWORD WINAPI wait_thread(void *arg)
{
    waiter *w = arg;
    ft_err e;
    InterlockedExchange(&w->started, 1);
    InterlockedExchange(&w->result, ft_events_wait(w->ev, w->timeout_ms, &e));
    return 0;
}

static void test_wait_and_shutdown(void)
{
    ft_err e;
    ft_events *ev = ft_events_open_luid(LUID_A, &e);
    CHECK(ev != NULL);
    if (!ev)
        return;
    /* a notification wakes a waiting thread */
    waiter w1 = {ev, -1, 99, 0};
    HANDLE t1 = CreateThread(NULL, 0, wait_thread, &w1, 0, NULL);
    while (!w1.started)
        Sleep(1);
    Sleep(30);
    CHECK(w1.result == 99); /* still waiting */
    notify_addr(ev, ADD, LUID_A, v4(10, 0, 0, 3, 8));
    CHECK(WaitForSingleObject(t1, 5000) == WAIT_OBJECT_0 && w1.result == 1);
    CloseHandle(t1);
    read_all(ev, got, 8);
    /* shutdown wakes two waiters without end at once */
    waiter w2 = {ev, -1, 99, 0}, w3 = {ev, -1, 99, 0};
    HANDLE t2 = CreateThread(NULL, 0, wait_thread, &w2, 0, NULL);
    HANDLE t3 = CreateThread(NULL, 0, wait_thread, &w3, 0, NULL);
    while (!w2.started || !w3.started)
        Sleep(1);
    Sleep(30);
    DWORD t0 = GetTickCount();
    ft_events_shutdown(ev);
    CHECK(WaitForSingleObject(t2, 5000) == WAIT_OBJECT_0 && w2.result == FT_ECLOSED);
    CHECK(WaitForSingleObject(t3, 5000) == WAIT_OBJECT_0 && w3.result == FT_ECLOSED);
    CHECK(GetTickCount() - t0 < 2000);
    CloseHandle(t2);
    CloseHandle(t3);
    /* after shutdown: waits and reads say closed, notifications are ignored, shutdown again is harmless */
    CHECK(ft_events_wait(ev, 1000, &e) == FT_ECLOSED);
    CHECK(notify_addr(ev, ADD, LUID_A, v4(10, 0, 0, 4, 8)) == FT_OK);
    CHECK(ft_events_read(ev, got, 8, &e) == FT_ECLOSED);
    ft_events_shutdown(ev);
    ft_events_close(ev);
}

#define PRODUCERS 4
#define PER_PRODUCER 3000

typedef struct producer {
    ft_events *ev;
    uint16_t id;
} producer;

static DWORD WINAPI produce(void *arg)
{
    producer *p = arg;
    for (int i = 0; i < PER_PRODUCER; i++)
        notify_addr(p->ev, ADD, LUID_A, v6_seq(p->id, (uint16_t)i, 64));
    return 0;
}

static void test_producers_on_many_threads(void)
{
    ft_err e;
    ft_events *ev = ft_events_open_luid(LUID_A, &e);
    CHECK(ev != NULL);
    if (!ev)
        return;
    producer ps[PRODUCERS];
    HANDLE ts[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++) {
        ps[i].ev = ev;
        ps[i].id = (uint16_t)(i + 1);
        ts[i] = CreateThread(NULL, 0, produce, &ps[i], 0, NULL);
    }
    int last[PRODUCERS + 1];
    for (int i = 0; i <= PRODUCERS; i++)
        last[i] = -1;
    int received = 0, marks = 0, ordered = 1, running = PRODUCERS;
    while (running > 0 || ft_events_wait(ev, 0, &e) == 1) {
        if (running > 0 && WaitForMultipleObjects(PRODUCERS, ts, TRUE, 0) == WAIT_OBJECT_0)
            running = 0;
        int r = ft_events_read(ev, got, 64, &e);
        if (r == FT_EAGAIN) {
            ft_events_wait(ev, 10, &e);
            continue;
        }
        for (int i = 0; i < r; i++) {
            if (got[i].kind == FT_EV_OVERFLOW) {
                marks++;
                continue;
            }
            int id = got[i].addr.bytes[12] << 8 | got[i].addr.bytes[13];
            int seq = got[i].addr.bytes[14] << 8 | got[i].addr.bytes[15];
            if (id < 1 || id > PRODUCERS || seq <= last[id])
                ordered = 0;
            else
                last[id] = seq;
            received++;
        }
    }
    for (int i = 0; i < PRODUCERS; i++)
        CloseHandle(ts[i]);
    CHECK(ordered);
    CHECK(received > 0 && received <= PRODUCERS * PER_PRODUCER);
    CHECK(received == PRODUCERS * PER_PRODUCER || marks > 0); /* a loss is always marked */
    CHECK(received + ft_events_dropped(ev) == PRODUCERS * PER_PRODUCER); /* and counted */
    ft_events_close(ev);
}

int main(void)
{
    test_open_and_close();
    test_addresses_and_filter();
    test_interface_rows();
    test_overflow_mark();
    test_wait_and_shutdown();
    test_producers_on_many_threads();
    return check_summary();
}

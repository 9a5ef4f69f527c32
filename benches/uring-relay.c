// SPDX-License-Identifier: MIT OR Apache-2.0
//
// The batched relay: benches/offload-relay.c with io_uring in place of select() and one read()
// and one write() per packet (issue 16: "several packets per system call"). The same devices
// (IFF_VNET_HDR, offloads csum|tso4|tso6|tso-ecn, the virtio_net_hdr passed through verbatim),
// the same setup from outside, the same CLI and counters; only the system calls differ.
//
//     uring-relay DEV0 DEV1      (inside the namespace holding both persistent TUN devices)
//
// One thread, one ring (IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN where the
// kernel has them), both devices registered as fixed files and opened without O_NONBLOCK, so
// that a read with no packet waits on the device's poll inside the kernel instead of
// completing with EAGAIN. Each device has one multishot read (IORING_OP_READ_MULTISHOT, kernel
// 6.7+) outstanding on its own ring of BUFS_PER_DEV provided buffers: each packet the device
// holds completes as one CQE naming the buffer it landed in. Each turn of the loop makes ONE
// io_uring_enter (io_uring_submit_and_wait(ring, 1)) that submits everything queued since the
// last — the writes of the packets read — and waits for at least one completion; then every
// completion available is reaped before the next submission. A completed read queues a write
// of its buffer to the other device; a completed write gives the buffer back to its ring.
//
// Why not plain reads, several per device: a TUN device is not FMODE_NOWAIT, so io_uring
// waits for it through its poll, and K reads parked on it are all woken by every packet; one
// wins, and the K-1 that lost — already polled once — are handed to io-wq worker threads to
// read blocking. Those then race one another: packets of one direction came out of order
// (hundreds of TCP retransmits at 300 Mbit/s) on 31 extra threads. One multishot read per
// device has one poll entry and reads every queued packet in order, in this thread.
//
// Order: the writes of one direction leave in the order their reads completed (the order of
// the packets on the device: one thread reaps the completions in the order the kernel posted
// them). Each direction's writes of a turn go as one chain of IOSQE_IO_HARDLINK-ed SQEs (the
// kernel starts each only after the one before completed; a hard link, unlike IOSQE_IO_LINK,
// is not cancelled by a failed write before it), and a direction's next chain is only
// submitted once the previous one has completed, so chains never overtake one another. TUN
// writes do not block, so in practice each chain completes within the io_uring_enter that
// submitted it and the next turn sends the next chain.
//
// SIGTERM and SIGINT set a flag and bump an eventfd whose read is always outstanding in the
// ring, so a signal arriving just before io_uring_enter still ends the wait. Then it prints
// "DEV0 -> DEV1: N packets, M bytes, E write errors" (and the reverse) on stdout, as
// offload-relay does, the number of io_uring_enter calls and completions on stderr (the batch
// size actually reached), and exits 0. Any failing system call but a packet's write is fatal
// (exit 1, naming it); a failed write drops that packet and is counted (the first one is
// reported).
//
// Built by benches/tun-bench.py: gcc -O2 -Wall -Wextra -o uring-relay uring-relay.c -luring
// (liburing-dev; liburing 2.3 predates io_uring_prep_read_multishot: the SQE is filled here).

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define RELAY_NAME "uring-relay"
#include "relay-tun.h"

// The largest IP packet (total length 65535) behind its header.
#define BUF_LEN (VNET_HDR_LEN + 65535)
// Provided buffers per device (a power of two); -DBUFS_PER_DEV=N to change.
#ifndef BUFS_PER_DEV
#define BUFS_PER_DEV 32
#endif
#define NBUF (2 * BUFS_PER_DEV)
// At most every buffer's write, both reads and the eventfd's read are queued at once.
#define RING_ENTRIES 256
_Static_assert(NBUF + 3 <= RING_ENTRIES, "ring too small for the buffers");
_Static_assert((BUFS_PER_DEV & (BUFS_PER_DEV - 1)) == 0, "BUFS_PER_DEV: a power of two");

// liburing 2.3 may predate these (values from the kernel's uapi linux/io_uring.h).
#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER (1U << 12)
#endif
#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#endif
// Debian 12's uapi headers (6.1) lack it: the opcode after IORING_OP_SENDMSG_ZC (kernel 6.7).
#define OP_READ_MULTISHOT (IORING_OP_SENDMSG_ZC + 1)

// Registered (fixed) file indexes: the two devices, then the eventfd.
#define EVENT_FILE 2
// user_data: the operation in the high 32 bits, the buffer in the low.
enum { OP_READ = 1, OP_WRITE = 2, OP_EVENT = 3 };
#define UD(op, buf) (((uint64_t)(op) << 32) | (uint32_t)(buf))

static volatile sig_atomic_t stop;
static int event_fd = -1;

static void on_signal(int sig) {
    uint64_t one = 1;
    ssize_t r;
    (void)sig;
    stop = 1;
    r = write(event_fd, &one, sizeof one); // async-signal-safe; wakes the ring's wait
    (void)r;
}

static struct io_uring ring;

static struct io_uring_sqe *sqe_or_die(void) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    if (sqe == NULL) {
        fprintf(stderr, "uring-relay: submission queue full (%d entries)\n", RING_ENTRIES);
        exit(1);
    }
    return sqe;
}

// Buffer b belongs to device d = b / BUFS_PER_DEV (its buffer id in d's group d is
// b % BUFS_PER_DEV): it is read from there and written to the other.
static unsigned char (*bufs)[BUF_LEN];
static struct io_uring_buf_ring *buf_ring[2];

// Gives buffer b back to its device's ring (visible to the kernel at once).
static void return_buffer(int b) {
    int d = b / BUFS_PER_DEV;
    io_uring_buf_ring_add(buf_ring[d], bufs[b], BUF_LEN, (unsigned short)(b % BUFS_PER_DEV),
                          io_uring_buf_ring_mask(BUFS_PER_DEV), 0);
    io_uring_buf_ring_advance(buf_ring[d], 1);
}

// The multishot read of device d, into buffers of group d.
static void queue_read(int d) {
    struct io_uring_sqe *sqe = sqe_or_die();
    io_uring_prep_rw(OP_READ_MULTISHOT, sqe, d, NULL, 0, 0);
    sqe->flags |= IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT;
    sqe->buf_group = (unsigned short)d;
    io_uring_sqe_set_data64(sqe, UD(OP_READ, d));
}

static void queue_event_read(uint64_t *value) {
    struct io_uring_sqe *sqe = sqe_or_die();
    io_uring_prep_read(sqe, EVENT_FILE, value, sizeof *value, 0);
    sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, UD(OP_EVENT, 0));
}

int main(int argc, char **argv) {
    unsigned long long packets[2] = {0, 0}, bytes[2] = {0, 0}, write_errors[2] = {0, 0};
    unsigned long long enters = 0, completions = 0; // how much each system call carried
    // Per direction (= the device read from): the buffers read and not yet written, in read
    // order (a FIFO of at most BUFS_PER_DEV), the writes submitted and not completed, the
    // buffers in the device's ring, and whether its multishot read is outstanding.
    int pending[2][BUFS_PER_DEV], pending_head[2] = {0, 0}, pending_len[2] = {0, 0};
    int inflight[2] = {0, 0}, in_ring[2] = {0, 0}, armed[2] = {0, 0};
    struct io_uring_probe *probe;
    static int len[NBUF];
    struct io_uring_params params;
    struct sigaction sa;
    uint64_t event_value;
    const char *setup_flags = "single-issuer,defer-taskrun";
    int fd[3], i, b, d, ret;

    if (argc != 3) {
        fprintf(stderr, "usage: %s DEV0 DEV1\n", argv[0]);
        return 2;
    }
    event_fd = eventfd(0, EFD_CLOEXEC);
    if (event_fd < 0)
        die("eventfd");
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0)
        die("sigaction");
    fd[0] = open_tun(argv[1]);
    fd[1] = open_tun(argv[2]);
    fd[2] = event_fd;
    bufs = malloc(sizeof(*bufs) * NBUF);
    if (bufs == NULL)
        die("allocating %d buffers of %d bytes", NBUF, BUF_LEN);

    memset(&params, 0, sizeof params);
    params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    ret = io_uring_queue_init_params(RING_ENTRIES, &ring, &params);
    if (ret == -EINVAL) { // an older kernel: the plain ring
        setup_flags = "none (kernel lacks single-issuer/defer-taskrun)";
        memset(&params, 0, sizeof params);
        ret = io_uring_queue_init_params(RING_ENTRIES, &ring, &params);
    }
    if (ret < 0) {
        errno = -ret;
        die("io_uring_queue_init(%d)", RING_ENTRIES);
    }
    probe = io_uring_get_probe_ring(&ring);
    if (probe == NULL)
        die("IORING_REGISTER_PROBE");
    if (!io_uring_opcode_supported(probe, OP_READ_MULTISHOT)) {
        fprintf(stderr, "uring-relay: this kernel has no IORING_OP_READ_MULTISHOT (Linux 6.7+)\n");
        exit(1);
    }
    io_uring_free_probe(probe);
    ret = io_uring_register_files(&ring, fd, 3);
    if (ret < 0) {
        errno = -ret;
        die("io_uring_register_files");
    }
    for (d = 0; d < 2; d++) {
        struct io_uring_buf_reg reg;
        buf_ring[d] = mmap(NULL, BUFS_PER_DEV * sizeof(struct io_uring_buf),
                           PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
        if (buf_ring[d] == MAP_FAILED)
            die("mmap of the buffer ring of %s", argv[1 + d]);
        io_uring_buf_ring_init(buf_ring[d]);
        memset(&reg, 0, sizeof reg);
        reg.ring_addr = (unsigned long)buf_ring[d];
        reg.ring_entries = BUFS_PER_DEV;
        reg.bgid = (unsigned short)d;
        ret = io_uring_register_buf_ring(&ring, &reg, 0);
        if (ret < 0) {
            errno = -ret;
            die("io_uring_register_buf_ring for %s", argv[1 + d]);
        }
        for (i = 0; i < BUFS_PER_DEV; i++)
            return_buffer(d * BUFS_PER_DEV + i);
        in_ring[d] = BUFS_PER_DEV;
    }
    queue_event_read(&event_value);
    fprintf(stderr, "uring-relay: relay running: %s <-> %s; engine uring-relay (C, one thread, "
            "io_uring: one multishot read per device into %d provided buffers, one "
            "io_uring_enter per batch, setup flags %s), vnet header %d bytes, offloads "
            "csum,tso4,tso6,tso-ecn\n", argv[1], argv[2], BUFS_PER_DEV, setup_flags,
            VNET_HDR_LEN);

    while (!stop) {
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;

        // A device's multishot read ends when its ring ran dry (ENOBUFS): again once a
        // buffer is back.
        for (d = 0; d < 2; d++) {
            if (!armed[d] && in_ring[d] > 0) {
                queue_read(d);
                armed[d] = 1;
            }
        }
        // Each direction's reads not yet written, as one hard-linked chain (in read order),
        // once its previous chain has completed.
        for (d = 0; d < 2; d++) {
            if (inflight[d] != 0 || pending_len[d] == 0)
                continue;
            for (i = 0; i < pending_len[d]; i++) {
                struct io_uring_sqe *sqe = sqe_or_die();
                b = pending[d][(pending_head[d] + i) % BUFS_PER_DEV];
                io_uring_prep_write(sqe, 1 - d, bufs[b], (unsigned)len[b], 0);
                sqe->flags |= IOSQE_FIXED_FILE;
                if (i + 1 < pending_len[d])
                    sqe->flags |= IOSQE_IO_HARDLINK;
                io_uring_sqe_set_data64(sqe, UD(OP_WRITE, b));
            }
            inflight[d] = pending_len[d];
            pending_head[d] = (pending_head[d] + pending_len[d]) % BUFS_PER_DEV;
            pending_len[d] = 0;
        }
        ret = io_uring_submit_and_wait(&ring, 1);
        enters++;
        if (ret < 0) {
            if (ret == -EINTR) // a signal: the flag is checked, the queued SQEs stay queued
                continue;
            errno = -ret;
            die("io_uring_submit_and_wait");
        }
        io_uring_for_each_cqe(&ring, head, cqe) {
            uint64_t ud = io_uring_cqe_get_data64(cqe);
            int op = (int)(ud >> 32), res = cqe->res;

            seen++;
            b = (int)(uint32_t)ud;
            if (op == OP_EVENT) {
                stop = 1;
                continue;
            }
            if (op == OP_READ) {
                d = b;
                if (!(cqe->flags & IORING_CQE_F_MORE))
                    armed[d] = 0;
                if (cqe->flags & IORING_CQE_F_BUFFER) {
                    b = d * BUFS_PER_DEV + (int)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
                    in_ring[d]--;
                    if (res <= 0) { // nothing read into it
                        return_buffer(b);
                        in_ring[d]++;
                    }
                }
                if (res == -ENOBUFS || res == -EAGAIN || res == -EINTR || res == 0)
                    continue;
                if (res < 0) {
                    errno = -res;
                    die("read from %s", argv[1 + d]);
                }
                if (!(cqe->flags & IORING_CQE_F_BUFFER)) {
                    fprintf(stderr, "uring-relay: a read from %s without a buffer\n",
                            argv[1 + d]);
                    exit(1);
                }
                len[b] = res;
                pending[d][(pending_head[d] + pending_len[d]) % BUFS_PER_DEV] = b;
                pending_len[d]++;
                continue;
            }
            d = b / BUFS_PER_DEV;
            // OP_WRITE: the packet is gone (or dropped); its buffer goes back to its ring.
            inflight[d]--;
            if (res == len[b]) {
                packets[d]++;
                bytes[d] += (unsigned long long)(res - VNET_HDR_LEN);
            } else if (write_errors[d]++ == 0) {
                fprintf(stderr, "uring-relay: write of %d bytes to %s: %s (packet dropped; "
                        "further failures only counted)\n", len[b], argv[2 - d],
                        res < 0 ? strerror(-res) : "short write");
            }
            return_buffer(b);
            in_ring[d]++;
        }
        io_uring_cq_advance(&ring, seen);
        completions += seen;
    }
    fprintf(stderr, "uring-relay: %llu io_uring_enter calls, %llu completions (%.2f per call)\n",
            enters, completions, enters ? (double)completions / (double)enters : 0.0);
    for (i = 0; i < 2; i++)
        printf("%s -> %s: %llu packets, %llu bytes, %llu write errors\n", argv[1 + i],
               argv[2 - i], packets[i], bytes[i], write_errors[i]);
    if (fflush(stdout) != 0)
        die("writing the counters to stdout");
    return 0;
}

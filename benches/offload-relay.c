// SPDX-License-Identifier: MIT OR Apache-2.0
//
// The simple offload relay: the benchmark's strongest simple competitor to hostkit's engines
// (issue 16). One thread, select() on both TUN devices opened with IFF_VNET_HDR and the
// offloads csum|tso4|tso6|tso-ecn, one read() then one write() of each (super-)packet, its
// virtio_net_hdr passed through verbatim. Nothing else: no batching, no epoll, no queues, no
// routing — the devices, addresses and table-13 routing are set up beforehand exactly as
// `hostkit tun up --dry-run --engine fast` prints them, and the priority is given from outside
// (benches/tun-bench.py does both: the replayed dry run, then `nice -n -10 offload-relay …`).
//
//     offload-relay DEV0 DEV1      (inside the namespace holding both persistent TUN devices)
//
// Prints "relay running: …" on stderr once both devices are attached; on SIGTERM or SIGINT
// prints "DEV0 -> DEV1: N packets, M bytes" (and the reverse) on stdout, as `hostkit tun up`
// does, and exits 0. Any failing system call but a packet's write is fatal (exit 1, naming
// it); a failed write drops that packet and is counted (the first one is reported).
//
// Built by benches/tun-bench.py: gcc -O2 -Wall -Wextra -o offload-relay offload-relay.c

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <unistd.h>

#define RELAY_NAME "offload-relay"
#include "relay-tun.h"

// The largest IP packet (total length 65535) behind its header.
#define BUF_LEN (VNET_HDR_LEN + 65535)

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv) {
    static unsigned char buf[BUF_LEN];
    unsigned long long packets[2] = {0, 0}, bytes[2] = {0, 0}, write_errors[2] = {0, 0};
    struct sigaction sa;
    sigset_t block, orig;
    int fd[2], maxfd, i;

    if (argc != 3) {
        fprintf(stderr, "usage: %s DEV0 DEV1\n", argv[0]);
        return 2;
    }
    // SIGTERM/SIGINT are blocked except inside pselect(): the flag is never missed.
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    if (sigprocmask(SIG_BLOCK, &block, &orig) < 0)
        die("sigprocmask");
    if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0)
        die("sigaction");
    fd[0] = open_tun(argv[1]);
    fd[1] = open_tun(argv[2]);
    maxfd = fd[0] > fd[1] ? fd[0] : fd[1];
    fprintf(stderr, "offload-relay: relay running: %s <-> %s; engine offload-relay (C, one "
            "thread, select, one read and one write per packet), vnet header %d bytes, "
            "offloads csum,tso4,tso6,tso-ecn\n", argv[1], argv[2], VNET_HDR_LEN);

    while (!stop) {
        fd_set rd;
        FD_ZERO(&rd);
        FD_SET(fd[0], &rd);
        FD_SET(fd[1], &rd);
        if (pselect(maxfd + 1, &rd, NULL, NULL, NULL, &orig) < 0) {
            if (errno == EINTR)
                continue;
            die("pselect");
        }
        for (i = 0; i < 2; i++) {
            ssize_t n, w;
            if (!FD_ISSET(fd[i], &rd))
                continue;
            n = read(fd[i], buf, sizeof buf);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    continue;
                die("read from %s", argv[1 + i]);
            }
            w = write(fd[1 - i], buf, (size_t)n);
            if (w == n) {
                packets[i]++;
                bytes[i] += (unsigned long long)(n - VNET_HDR_LEN);
                continue;
            }
            if (write_errors[i]++ == 0)
                fprintf(stderr, "offload-relay: write of %zd bytes to %s: %s (packet dropped; "
                        "further failures only counted)\n", n, argv[2 - i],
                        w < 0 ? strerror(errno) : "short write");
        }
    }
    for (i = 0; i < 2; i++)
        printf("%s -> %s: %llu packets, %llu bytes, %llu write errors\n", argv[1 + i],
               argv[2 - i], packets[i], bytes[i], write_errors[i]);
    if (fflush(stdout) != 0)
        die("writing the counters to stdout");
    return 0;
}

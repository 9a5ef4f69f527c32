/*
 * set_ttl: rewrites the TTL (IPv4) or hop limit (IPv6) of every packet to N and counts the
 * packets it rewrote — a hostkit processor in C, batch mode (the protocol: docs/processors.md).
 *
 *     cc -O2 -Wall -o set_ttl examples/processors/set_ttl.c
 *     hostkit tun up --processor-exec './set_ttl 7'
 *     ping -c 3 10.0.0.2        # every reply: ttl=7
 *
 * hostkit starts it with the socket on descriptor $HOSTKIT_PROCESSOR_FD (3). Each packet is
 * answered with `replace` (the new bytes: the IPv4 header checksum is recomputed; TCP and UDP
 * checksums do not cover the TTL) or `forward` for what is not IP. It exits when hostkit closes
 * the socket, printing its count on stderr.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { HELLO = 1, PACKETS = 2, VERDICTS = 3 };
enum { FORWARD = 0, DROP = 1, REPLACE = 2, INJECT = 3 };
enum { BATCH = 256, WINDOW = 1024 };

static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) << 32 | get32(p + 4); }
static void put32(uint8_t *p, uint32_t v) {
    p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}
static void put64(uint8_t *p, uint64_t v) { put32(p, v >> 32); put32(p + 4, (uint32_t)v); }

/* Reads exactly n bytes; 0 at EOF, -1 on error. */
static int read_full(int fd, uint8_t *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r == 0) return 0;
        if (r < 0) { if (errno == EINTR) continue; return -1; }
        got += (size_t)r;
    }
    return 1;
}

static int write_full(int fd, const uint8_t *buf, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0) { if (errno == EINTR) continue; return -1; }
        buf += w; n -= (size_t)w;
    }
    return 0;
}

/* The next message: its type in *kind, its body in *body (grown as needed), its length. */
static long read_message(int fd, uint8_t *kind, uint8_t **body, size_t *cap) {
    uint8_t head[5];
    if (read_full(fd, head, 5) <= 0) return -1;
    uint32_t len = get32(head);
    if (len < 1 || len > (1u << 24)) return -1;
    *kind = head[4];
    if (len - 1 > *cap) {
        *cap = len - 1;
        *body = realloc(*body, *cap);
        if (!*body) return -1;
    }
    if (len > 1 && read_full(fd, *body, len - 1) <= 0) return -1;
    return (long)(len - 1);
}

static uint16_t ipv4_checksum(const uint8_t *h, size_t len) {
    uint32_t sum = 0;
    for (size_t i = 0; i + 1 < len; i += 2) sum += (uint32_t)h[i] << 8 | h[i + 1];
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

/* Sets the TTL or hop limit; returns whether the packet is IP (and was changed). */
static int set_ttl(uint8_t *p, uint32_t len, uint8_t ttl) {
    if (len >= 20 && p[0] >> 4 == 4) {
        size_t ihl = (size_t)(p[0] & 0x0f) * 4;
        if (ihl < 20 || ihl > len) return 0;
        p[8] = ttl;
        p[10] = p[11] = 0;
        uint16_t c = ipv4_checksum(p, ihl);
        p[10] = c >> 8; p[11] = c & 0xff;
        return 1;
    }
    if (len >= 40 && p[0] >> 4 == 6) {
        p[7] = ttl;
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    int ttl = argc > 1 ? atoi(argv[1]) : 7;
    if (ttl < 1 || ttl > 255) {
        fprintf(stderr, "usage: %s [TTL 1..255]\n", argv[0]);
        return 2;
    }
    const char *env = getenv("HOSTKIT_PROCESSOR_FD");
    int fd = env ? atoi(env) : 3;
    uint8_t kind, *body = NULL, *out = NULL;
    size_t cap = 0, out_cap = 0;
    unsigned long rewritten = 0;

    long n = read_message(fd, &kind, &body, &cap);
    if (n < 6 || kind != HELLO || memcmp(body, "HKPR", 4) != 0 || body[4] != 0 || body[5] != 1) {
        fprintf(stderr, "set_ttl: no hello of protocol version 1\n");
        return 1;
    }
    static const char name[] = "set-ttl";
    uint8_t hello[5 + 14 + sizeof name - 1];
    put32(hello, sizeof hello - 4);
    hello[4] = HELLO;
    memcpy(hello + 5, "HKPR", 4);
    hello[9] = 0; hello[10] = 1;
    put32(hello + 11, BATCH);
    put32(hello + 15, WINDOW);
    memcpy(hello + 19, name, sizeof name - 1);
    if (write_full(fd, hello, sizeof hello) < 0) return 1;

    for (;;) {
        n = read_message(fd, &kind, &body, &cap);
        if (n < 0) break; /* hostkit closed the socket: done */
        if (kind != PACKETS || n < 4) {
            fprintf(stderr, "set_ttl: unexpected message type %u\n", kind);
            return 1;
        }
        uint32_t count = get32(body);
        /* Verdicts are at most as long as the packets plus their headers. */
        size_t need = 5 + 4 + (size_t)n + 16 * (size_t)count;
        if (need > out_cap) {
            out_cap = need;
            out = realloc(out, out_cap);
            if (!out) return 1;
        }
        size_t at = 4, o = 9;
        for (uint32_t i = 0; i < count; i++) {
            if (at + 24 > (size_t)n) return 1;
            uint64_t id = get64(body + at);
            uint32_t len = get32(body + at + 20);
            uint8_t *pkt = body + at + 24;
            if (at + 24 + len > (size_t)n) return 1;
            at += 24 + len;
            int changed = set_ttl(pkt, len, (uint8_t)ttl);
            put64(out + o, id);
            out[o + 8] = changed ? REPLACE : FORWARD;
            out[o + 9] = 0; out[o + 10] = 0; out[o + 11] = 0;
            put32(out + o + 12, changed ? len : 0);
            o += 16;
            if (changed) {
                memcpy(out + o, pkt, len);
                o += len;
                rewritten++;
            }
        }
        put32(out, (uint32_t)(o - 4));
        out[4] = VERDICTS;
        put32(out + 5, count);
        if (write_full(fd, out, o) < 0) break;
    }
    fprintf(stderr, "set_ttl: rewrote %lu packets\n", rewritten);
    return 0;
}

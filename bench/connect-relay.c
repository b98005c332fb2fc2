/* connect-relay: lets a load tool with no proxy support (h2load) drive keep-alive traffic through an
 * HTTP CONNECT tunnel, so the proxy under test intercepts TLS exactly as it would for an app using
 * HTTPS_PROXY.
 *
 *   connect-relay LISTEN_PORT PROXY_HOST:PORT [CONNECT_AUTHORITY]
 *
 * For every TCP connection accepted on 127.0.0.1:LISTEN_PORT it opens one TCP connection to
 * PROXY_HOST:PORT, sends `CONNECT CONNECT_AUTHORITY HTTP/1.1` (when given), requires a 2xx answer, and
 * from then on copies bytes both ways. Without CONNECT_AUTHORITY it is a plain byte relay (used for the
 * "direct via relay" baseline, which measures what this relay itself costs).
 *
 * Why this and not a client that speaks CONNECT itself: wrk and h2load have no proxy support, and a
 * Python client tops out far below the proxies' rates (it would measure itself). h2load is fast, does
 * TLS with SNI = the URI host, HTTP/1.1 and h2, and --connect-to keeps it off DNS. The client's TLS
 * session still ends at the proxy: this relay never sees plaintext. What it costs: one extra loopback
 * hop per direction and its own CPU (reported separately, never added to the proxy's), identical for
 * every CONNECT target, so same-run ratios between proxies are unaffected by design; absolute req/s and
 * latency are lower/higher than a CONNECT-capable client would see. The "direct via relay" row shows it.
 *
 * Single-threaded epoll, non-blocking (CONNECTs of many client connections proceed in parallel, as a
 * real client pool's would), TCP_NODELAY on both sides, 16 KiB buffer per direction.
 * Loopback only: it refuses a PROXY_HOST that is not 127.0.0.1 / ::1 / localhost.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF 16384

struct end {
    int fd;
    struct end *peer;
    size_t off, len;    /* bytes read from fd, not yet written to peer */
    int dead;
    int phase;          /* proxy end only: 0 connecting, 1 CONNECT sent / reading the answer, 2 relaying */
    unsigned events;    /* the mask epoll has now: epoll_ctl only when it changes (one syscall saved per flush) */
    struct end *next_dead;
    char buf[BUF];
};

static int ep;
static struct sockaddr_storage target;
static socklen_t target_len;
static const char *authority;
static struct end *graveyard;

static void die(const char *m) { perror(m); exit(1); }

static int relaying(struct end *e) { return e->phase == 2 && e->peer->phase == 2; }

static void interest(struct end *e) {
    struct epoll_event ev = {0};
    ev.data.ptr = e;
    if (!relaying(e)) {                                 /* handshake with the proxy still going on */
        ev.events = e->phase == 0 ? EPOLLOUT : e->phase == 1 ? EPOLLIN : 0;
    } else {
        if (e->len == 0) ev.events |= EPOLLIN;         /* room to read */
        if (e->peer->len > 0) ev.events |= EPOLLOUT;   /* peer's bytes waiting to go out on e */
    }
    if (ev.events == e->events) return;
    e->events = ev.events;
    if (epoll_ctl(ep, EPOLL_CTL_MOD, e->fd, &ev) < 0) die("epoll_ctl mod");
}

static void kill_pair(struct end *e) {
    if (e->dead) return;
    struct end *p = e->peer;
    e->dead = p->dead = 1;
    close(e->fd); close(p->fd);
    e->next_dead = p; p->next_dead = graveyard; graveyard = e;
}

static void flush(struct end *e) {                  /* write e's buffered bytes to its peer */
    while (e->off < e->len) {
        ssize_t w = write(e->peer->fd, e->buf + e->off, e->len - e->off);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) break;
            kill_pair(e); return;
        }
        e->off += (size_t)w;
    }
    if (e->off == e->len) e->off = e->len = 0;
    interest(e); interest(e->peer);
}

static void on_read(struct end *e) {
    if (e->len) return;
    ssize_t n = read(e->fd, e->buf, BUF);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) { kill_pair(e); return; }
    if (n < 0) return;
    e->len = (size_t)n; e->off = 0;
    flush(e);
}

static void start_relaying(struct end *srv) {
    srv->phase = 2;
    interest(srv); interest(srv->peer);
    if (srv->len) flush(srv);                           /* bytes that came right after the CONNECT answer */
}

static void on_proxy_writable(struct end *b) {          /* phase 0: connect() finished; send the CONNECT */
    int err = 0; socklen_t l = sizeof err;
    getsockopt(b->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err) { kill_pair(b); return; }
    if (!authority) { start_relaying(b); return; }
    char req[600];
    int n = snprintf(req, sizeof req, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", authority, authority);
    if (write(b->fd, req, (size_t)n) != n) { kill_pair(b); return; }   /* a fresh socket takes 60 bytes */
    b->phase = 1; interest(b);
}

static void on_proxy_answer(struct end *b) {            /* phase 1: read the answer head, then relay */
    ssize_t n = read(b->fd, b->buf + b->len, BUF - 1 - b->len);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) { kill_pair(b); return; }
    if (n < 0) return;
    b->len += (size_t)n; b->buf[b->len] = 0;
    char *eoh = strstr(b->buf, "\r\n\r\n");
    if (!eoh) { if (b->len >= BUF - 1) kill_pair(b); return; }
    if (strncmp(b->buf, "HTTP/1.1 2", 10) != 0 && strncmp(b->buf, "HTTP/1.0 2", 10) != 0) {
        fprintf(stderr, "connect-relay: CONNECT %s refused: %.80s\n", authority, b->buf);
        kill_pair(b); return;
    }
    size_t head = (size_t)(eoh + 4 - b->buf);           /* keep whatever followed the head: it is tunnel data */
    memmove(b->buf, b->buf + head, b->len - head);
    b->len -= head; b->off = 0;
    start_relaying(b);
}

static void on_accept(int ls) {
    int one = 1;
    for (;;) {
        int c = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
        if (c < 0) return;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        int s = socket(target.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (s < 0) { close(c); continue; }
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(s, (struct sockaddr *)&target, target_len) < 0 && errno != EINPROGRESS) { close(s); close(c); continue; }
        struct end *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
        a->fd = c; b->fd = s; a->peer = b; b->peer = a;
        a->phase = 2; b->phase = 0;                     /* the client end waits for the proxy end */
        a->events = 0; b->events = EPOLLOUT;
        struct epoll_event ea = {.events = 0, .data.ptr = a}, eb = {.events = EPOLLOUT, .data.ptr = b};
        epoll_ctl(ep, EPOLL_CTL_ADD, c, &ea); epoll_ctl(ep, EPOLL_CTL_ADD, s, &eb);
    }
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s LISTEN_PORT PROXY_HOST:PORT [CONNECT_AUTHORITY]\n", argv[0]); return 2; }
    signal(SIGPIPE, SIG_IGN);
    authority = argc > 3 ? argv[3] : NULL;
    char host[256]; const char *colon = strrchr(argv[2], ':');
    if (!colon || (size_t)(colon - argv[2]) >= sizeof host) { fprintf(stderr, "bad PROXY_HOST:PORT\n"); return 2; }
    memcpy(host, argv[2], (size_t)(colon - argv[2])); host[colon - argv[2]] = 0;
    if (host[0] == '[') { memmove(host, host + 1, strlen(host)); host[strlen(host) - 1] = 0; }
    if (strcmp(host, "127.0.0.1") && strcmp(host, "::1") && strcmp(host, "localhost")) {
        fprintf(stderr, "connect-relay: loopback targets only\n"); return 2;
    }
    struct addrinfo hints = {0}, *ai;
    hints.ai_socktype = SOCK_STREAM; hints.ai_flags = AI_NUMERICSERV;
    if (!strcmp(host, "localhost")) strcpy(host, "127.0.0.1");
    hints.ai_flags |= AI_NUMERICHOST;
    if (getaddrinfo(host, colon + 1, &hints, &ai)) { fprintf(stderr, "bad address\n"); return 2; }
    memcpy(&target, ai->ai_addr, ai->ai_addrlen); target_len = ai->ai_addrlen; freeaddrinfo(ai);

    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in la = {0};
    la.sin_family = AF_INET; la.sin_port = htons((unsigned short)atoi(argv[1]));
    la.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&la, sizeof la) < 0) die("bind");
    if (listen(ls, 1024) < 0) die("listen");
    ep = epoll_create1(0);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &lev);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0) { if (errno == EINTR) continue; die("epoll_wait"); }
        for (int i = 0; i < n; i++) {
            struct end *e = evs[i].data.ptr;
            if (!e) { on_accept(ls); continue; }
            if (e->dead) continue;
            if (e->phase == 0) { on_proxy_writable(e); continue; }
            if (e->phase == 1) { on_proxy_answer(e); continue; }
            if (evs[i].events & (EPOLLERR | EPOLLHUP) && !(evs[i].events & EPOLLIN)) { kill_pair(e); continue; }
            if (!relaying(e)) continue;
            if (evs[i].events & EPOLLOUT) flush(e->peer);
            if (!e->dead && (evs[i].events & EPOLLIN)) on_read(e);
        }
        while (graveyard) { struct end *d = graveyard; graveyard = d->next_dead; free(d); }
    }
}

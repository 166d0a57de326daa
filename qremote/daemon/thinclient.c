/*
 * qmail-remote, compiled: the thin client that hands a delivery to qremoted.
 *
 * qmail-rspawn starts qmail-remote once per delivery; a Python interpreter costs ~13 ms
 * of CPU to start, this program well under one. It speaks the client/daemon protocol of
 * qremote/daemon/wire.py exactly as qremote/daemon/client.py does:
 *
 *   - connect to qremote/qremoted.sock (relative to the qmail home, after chdir);
 *   - send one 'E' frame (argv[1..] joined by NUL) with fd 0 attached (SCM_RIGHTS);
 *   - wait for 'A' (+ "interval patience"), then for 'W' heartbeats; when silent (no 'A'
 *     within ACCEPT_TIMEOUT, three intervals without a word after it), look whether the
 *     daemon runs at all (its flock on qremote/qremoted.alive): while it does, wait on,
 *     until it has been silent for its patience;
 *   - answer 'C' (commit: the daemon is about to send the final dot) with 'Y', and from
 *     then on wait as long as 'C' said, whatever happens;
 *   - write the 'R' report to fd 1, byte for byte.
 *
 * Whenever the Python client would deliver in-process (no daemon running, a refusal),
 * this program execs the Python path (QREMOTE_FALLBACK) with the same argv and stdin
 * untouched: it never reads stdin, and the daemon reads the queue file with pread, so the
 * offset is where qmail-rspawn left it. The daemon never sends the dot without our 'Y':
 * before it, giving up (a defer) or delivering in-process (no daemon) sends nothing twice;
 * after it, a broken daemon means the message may be on its way: the report is Z, as the
 * Python client's. A daemon that dropped us before 'Y' while it still runs (a worker that
 * died) is asked again, up to RECONNECTS times.
 *
 * It never writes to stderr and always exits 0: qmail-rspawn bounces mail for any other
 * exit status. Every read and write is checked, short writes and EINTR are handled, and
 * no buffer has a fixed size that a long argv could overflow.
 *
 * QREMOTE_HOME, QREMOTE_FALLBACK and QREMOTE_MARKER come from qremote-config.h, which
 * `qremote install` writes next to this file when it compiles it.
 */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "qremote-config.h"

#define SOCKET_PATH "qremote/qremoted.sock"
#define ALIVE_PATH "qremote/qremoted.alive"
#define ACCEPT_TIMEOUT_MS 10000
#define STALL_BEATS 3
#define PATIENCE_MS 300000
#define RECONNECTS 3
#define HEADER 5
#define MAX_PAYLOAD (1u << 24)

/* Kept in the binary so that `qremote install` and `qremote check` recognise it. */
const char qremote_marker[] = QREMOTE_MARKER;

static const char LOST[] =
    "Zqremoted stopped answering during the delivery; the message may or may not have "
    "been sent, qmail will try again. (#4.3.0)\n";
static const char NOT_SENT[] =
    "Zqremoted did not finish the delivery in time; the message was not sent, qmail will "
    "try again. (#4.3.0)\n";

extern char **environ;

static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Exit 0 with a report: the only way this program ends, but for exec. */
static void finish(const char *report, size_t len)
{
    (void)write_all(1, report, len);
    _exit(0);
}

/* The Python path, with our argv, stdin untouched, and a word that it must not ask
 * qremoted again (the daemon already said no, or is not there). */
static void in_process(char **argv)
{
    size_t n = 0;
    while (environ && environ[n])
        n++;
    char **env = malloc((n + 2) * sizeof *env);
    if (env) {
        for (size_t i = 0; i < n; i++)
            env[i] = environ[i];
        env[n] = "QREMOTE_INPROCESS=1";
        env[n + 1] = NULL;
        argv[0] = (char *)QREMOTE_FALLBACK;
        execve(QREMOTE_FALLBACK, argv, env);
    }
    static const char failed[] =
        "Zqremote cannot start its in-process path " QREMOTE_FALLBACK ". (#4.3.0)\n";
    finish(failed, sizeof failed);  /* the NUL ends the report */
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Send the whole request; fd 0 rides on the first byte. 0 on success. */
static int send_request(int sock, const char *req, size_t len)
{
    char control[CMSG_SPACE(sizeof(int))];
    memset(control, 0, sizeof control);
    struct iovec iov = {.iov_base = (void *)req, .iov_len = len};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    int fd = 0;
    memcpy(CMSG_DATA(cmsg), &fd, sizeof fd);
    ssize_t n;
    do
        n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -1;
    size_t sent = (size_t)n;
    while (sent < len) {
        n = send(sock, req + sent, len - sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        sent += (size_t)n;
    }
    return 0;
}

/* A growing buffer of what the daemon sent and we have not yet taken as frames. */
struct inbuf {
    char *data;
    size_t len, cap;
};

static int append(struct inbuf *b, const char *data, size_t len)
{
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + len)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p)
            return -1;
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

static int is_kind(char k)
{
    return k && strchr("DESNAWRTCY", k) != NULL;
}

/* A number of seconds (0 < s < 86400) at the start of text[0..len), up to a blank; in
 * ms, or -1 when there is none. */
static long long seconds_ms(const char *text, size_t len)
{
    char buf[32];
    size_t n = 0;
    while (n < len && text[n] != ' ')
        n++;
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, text, n);
    buf[n] = '\0';
    char *end;
    errno = 0;
    double s = strtod(buf, &end);
    if (errno || end == buf || *end != '\0' || !(s > 0 && s < 86400))
        return -1;
    return (long long)(s * 1000);
}

/* Is qremoted running? It holds an exclusive flock on its alive file for its life. */
static int daemon_alive(void)
{
    int fd = open(ALIVE_PATH, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return 0;
    int alive = flock(fd, LOCK_SH | LOCK_NB) == -1 && errno == EWOULDBLOCK;
    close(fd);  /* drops our lock, if we got it */
    return alive;
}

enum outcome { REFUSED, DROPPED, SILENT, COMMITTED_LOST };

/* One request to the daemon; returns only when no report came (finish() otherwise). */
static enum outcome attempt(const char *req, size_t reqlen)
{
    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock == -1)
        return REFUSED;
    struct sockaddr_un addr = {0};
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, SOCKET_PATH, sizeof SOCKET_PATH);
    if (connect(sock, (struct sockaddr *)&addr, sizeof addr) == -1 ||
        send_request(sock, req, reqlen) == -1) {
        close(sock);
        return REFUSED;  /* no daemon, or it cannot have begun on half a request */
    }
    struct inbuf in = {0};
    int accepted = 0, committed = 0, gave_up = 0, silent = 0, refused = 0;
    long long wait_ms = ACCEPT_TIMEOUT_MS, patience = PATIENCE_MS;
    long long heard = now_ms();
    long long deadline = heard + wait_ms;
    static char chunk[65536];
    for (;;) {
        ssize_t got;
        if (gave_up) {
            got = recv(sock, chunk, sizeof chunk, MSG_DONTWAIT);
            if (got < 0 && errno == EINTR)
                continue;
            if (got < 0)
                got = 0;
        } else {
            int timeout = -1;
            if (wait_ms >= 0) {
                long long left = deadline - now_ms();
                timeout = left > 0 ? (int)left : 0;
            }
            struct pollfd pfd = {.fd = sock, .events = POLLIN};
            int ready = poll(&pfd, 1, timeout);
            if (ready < 0) {
                if (errno == EINTR)
                    continue;
                got = 0;
            } else if (ready == 0) {
                if (!committed && now_ms() - heard < patience && daemon_alive()) {
                    deadline = now_ms() + wait_ms;  /* running, and busy: wait on */
                    continue;
                }
                silent = 1;
                if (accepted) {
                    got = 0;
                } else {
                    /* Give up on 'A', atomically: with our reading side shut, the daemon's
                     * 'A' fails (EPIPE) and it does not deliver; what it sent before is
                     * still here to be read. */
                    shutdown(sock, SHUT_RD);
                    gave_up = 1;
                    continue;
                }
            } else {
                got = recv(sock, chunk, sizeof chunk, 0);
                if (got < 0 && errno == EINTR)
                    continue;
                if (got < 0)
                    got = 0;
            }
        }
        if (got == 0)
            break;  /* closed, broken, or given up on */
        if (append(&in, chunk, (size_t)got) == -1)
            break;
        heard = now_ms();
        deadline = heard + (wait_ms >= 0 ? wait_ms : 0);  /* any word resets the wait */
        while (in.len >= HEADER) {
            char kind = in.data[0];
            uint32_t size = (uint32_t)(unsigned char)in.data[1] << 24 |
                            (uint32_t)(unsigned char)in.data[2] << 16 |
                            (uint32_t)(unsigned char)in.data[3] << 8 |
                            (uint32_t)(unsigned char)in.data[4];
            if (!is_kind(kind) || size > MAX_PAYLOAD)
                goto broken;
            if (in.len < HEADER + (size_t)size)
                break;
            const char *payload = in.data + HEADER;
            if (kind == 'A') {
                accepted = 1;
                long long beat = seconds_ms(payload, size);
                wait_ms = beat < 0 ? -1 : beat * STALL_BEATS;
                const char *blank = memchr(payload, ' ', size);
                if (blank) {
                    long long given = seconds_ms(blank + 1, size - (size_t)(blank + 1 - payload));
                    if (given > 0)
                        patience = given;
                }
            } else if (kind == 'C' && accepted && !committed) {
                static const char yes[HEADER] = {'Y', 0, 0, 0, 0};
                if (write_all(sock, yes, sizeof yes) == -1)
                    goto broken;  /* it will not send the dot without our 'Y' */
                committed = 1;
                long long bound = seconds_ms(payload, size);
                wait_ms = bound < 0 ? patience : bound;
            } else if (kind == 'R') {
                if (size > 0 && strchr("KZDrhs", payload[0]) && payload[size - 1] == '\0')
                    finish(payload, size);
                refused = 1;
                goto broken;
            } else if (kind != 'W') {
                refused = 1;  /* 'N' (refused), or a frame that is no answer */
                goto broken;
            }
            memmove(in.data, in.data + HEADER + size, in.len - HEADER - size);
            in.len -= HEADER + size;
            deadline = now_ms() + (wait_ms >= 0 ? wait_ms : 0);  /* 'A', 'C' set new waits */
        }
    }
broken:
    close(sock);
    free(in.data);
    if (committed)
        return COMMITTED_LOST;
    if (refused)
        return REFUSED;
    return silent ? SILENT : DROPPED;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);  /* a vanished peer is an error return, as in Python */
    if (argc < 4 || getenv("QREMOTE_INPROCESS"))
        in_process(argv);  /* qmail's usage report and the rest come from there */
    const char *home = getenv("QMAILHOME");
    if (!home || !*home)
        home = QREMOTE_HOME;
    if (chdir(home) == -1)
        in_process(argv);

    /* The request: 'E', a 4-byte big-endian length, argv[1..] joined by NUL. */
    size_t body = 0;
    for (int i = 1; i < argc; i++)
        body += strlen(argv[i]) + (i > 1);
    if (body > MAX_PAYLOAD)
        in_process(argv);
    char *req = malloc(HEADER + body);
    if (!req)
        in_process(argv);
    req[0] = 'E';
    req[1] = (char)(body >> 24);
    req[2] = (char)(body >> 16);
    req[3] = (char)(body >> 8);
    req[4] = (char)body;
    size_t at = HEADER;
    for (int i = 1; i < argc; i++) {
        if (i > 1)
            req[at++] = '\0';
        size_t n = strlen(argv[i]);
        memcpy(req + at, argv[i], n);
        at += n;
    }

    for (int tries = 0; tries <= RECONNECTS; tries++) {
        enum outcome out = attempt(req, at);
        if (out == COMMITTED_LOST)
            finish(LOST, sizeof LOST);  /* sizeof counts the NUL that ends the report */
        if (out == REFUSED || !daemon_alive())
            in_process(argv);  /* nothing was sent by the daemon: deliver here */
        if (out == SILENT)
            finish(NOT_SENT, sizeof NOT_SENT);  /* running, silent past its patience */
        /* DROPPED before 'Y' by a daemon that still runs: ask it again. */
    }
    finish(NOT_SENT, sizeof NOT_SENT);
    return 0;
}

/*
 * qmail-remote, compiled: the thin client that hands a delivery to qremoted.
 *
 * qmail-rspawn starts qmail-remote once per delivery; a Python interpreter costs ~13 ms
 * of CPU to start, this program well under one. It speaks the client/daemon protocol of
 * qremote/daemon/wire.py exactly as qremote/daemon/client.py does:
 *
 *   - connect to qremote/qremoted.sock (relative to the qmail home, after chdir);
 *   - send one 'D' frame (argv[1..] joined by NUL) with fd 0 attached (SCM_RIGHTS);
 *   - wait up to ACCEPT_TIMEOUT seconds for 'A'; after 'A' + interval, give up when three
 *     intervals pass without a frame ('W' is the heartbeat);
 *   - write the 'R' report to fd 1, byte for byte.
 *
 * Whenever the Python client would deliver in-process (no daemon, a refusal, anything
 * broken before 'A'), this program execs the Python path (QREMOTE_FALLBACK) with the same
 * argv and stdin untouched: it never reads stdin, and the daemon reads the queue file with
 * pread, so the offset is where qmail-rspawn left it. After 'A' a broken daemon means the
 * message may be on its way: the report is Z, as the Python client's.
 *
 * It never writes to stderr and always exits 0: qmail-rspawn bounces mail for any other
 * exit status. Every read and write is checked, short writes and EINTR are handled, and
 * no buffer has a fixed size that a long argv could overflow.
 *
 * QREMOTE_HOME, QREMOTE_FALLBACK and QREMOTE_MARKER come from qremote-config.h, which
 * `qremote install` writes next to this file when it compiles it.
 */

#include <errno.h>
#include <poll.h>
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
#define ACCEPT_TIMEOUT_MS 10000
#define STALL_BEATS 3
#define HEADER 5
#define MAX_PAYLOAD (1u << 24)

/* Kept in the binary so that `qremote install` and `qremote check` recognise it. */
const char qremote_marker[] = QREMOTE_MARKER;

static const char LOST[] =
    "Zqremoted stopped answering during the delivery; the message may or may not have "
    "been sent, qmail will try again. (#4.3.0)\n";

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
    return k && strchr("DSNAWRT", k) != NULL;
}

/* Seconds of silence allowed after 'A' + payload, in ms; -1 for no limit (an 'A' that
 * names no usable interval, as from an older qremoted). */
static int stall_ms(const char *payload, uint32_t len)
{
    char text[32];
    if (len == 0 || len >= sizeof text)
        return -1;
    memcpy(text, payload, len);
    text[len] = '\0';
    char *end;
    errno = 0;
    double interval = strtod(text, &end);
    if (errno || end == text || *end != '\0' || !(interval > 0 && interval < 86400))
        return -1;
    return (int)(interval * STALL_BEATS * 1000);
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

    /* The request: 'D', a 4-byte big-endian length, argv[1..] joined by NUL. */
    size_t body = 0;
    for (int i = 1; i < argc; i++)
        body += strlen(argv[i]) + (i > 1);
    if (body > MAX_PAYLOAD)
        in_process(argv);
    char *req = malloc(HEADER + body);
    if (!req)
        in_process(argv);
    req[0] = 'D';
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

    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock == -1)
        in_process(argv);
    struct sockaddr_un addr = {0};
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, SOCKET_PATH, sizeof SOCKET_PATH);
    if (connect(sock, (struct sockaddr *)&addr, sizeof addr) == -1) {
        close(sock);
        in_process(argv);
    }
    if (send_request(sock, req, at) == -1) {
        close(sock);
        in_process(argv);  /* it cannot have begun on a request it did not get whole */
    }
    free(req);

    struct inbuf in = {0};
    int accepted = 0, gave_up = 0;
    int wait_ms = ACCEPT_TIMEOUT_MS;
    long long deadline = now_ms() + wait_ms;
    char chunk[65536];
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
                if (accepted) {
                    got = 0;  /* three heartbeats missed: the daemon is stuck */
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
        deadline = now_ms() + (wait_ms >= 0 ? wait_ms : 0);  /* any word resets the wait */
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
                wait_ms = stall_ms(payload, size);
            } else if (kind == 'R') {
                if (size > 0 && strchr("KZDrhs", payload[0]) && payload[size - 1] == '\0')
                    finish(payload, size);
                goto broken;
            } else if (kind != 'W') {
                goto broken;  /* 'N' (refused), or a frame that is no answer */
            }
            memmove(in.data, in.data + HEADER + size, in.len - HEADER - size);
            in.len -= HEADER + size;
            deadline = now_ms() + (wait_ms >= 0 ? wait_ms : 0);  /* 'A' sets a new wait */
        }
    }
broken:
    close(sock);
    if (accepted)
        finish(LOST, sizeof LOST);  /* sizeof counts the NUL that ends the report */
    in_process(argv);
    return 0;
}

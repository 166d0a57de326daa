/*
 * qremote-dkimverify, compiled: the QMAILQUEUE filter that has the verifying daemon
 * (qremote verifyd) do the work.
 *
 * qmail-smtpd runs its QMAILQUEUE program once per incoming message; a Python start-up
 * with dkimpy costs ~130 ms of CPU, this program well under one. It speaks the protocol
 * of qremote/verify/wire.py:
 *
 *   - spool the message (fd 0) into a memory file; the envelope on fd 1 is never read;
 *   - connect to qremote-verifyd/verifyd.sock (relative to the qmail home), make sure the
 *     process there runs as the owner of qremote-verifyd/ (SO_PEERCRED), and send one
 *     'V' frame (the size in ASCII, then a space and TCPREMOTEIP when set) with the
 *     memory file attached (SCM_RIGHTS);
 *   - wait for 'A' (+ seconds: the daemon's promise), then for the answer:
 *     'Q' + a descriptor: the new message, handed to qmail-queue;
 *     'U' + text: verification went wrong, the original goes to qmail-queue unchanged;
 *     'J' / 'F' + text: the policy rejects (exit 31) or defers (exit 71).
 *
 * Anything else (no daemon, 'N', a broken or silent daemon) runs the Python path
 * (QREMOTE_FALLBACK) on the spooled message, with QREMOTE_VERIFYD_FAILED saying why: it
 * verifies in-process, or passes the message on with a note when control/
 * dkimverifyfallback says "pass". The daemon never runs qmail-queue; this program execs it
 * exactly once on every path, so nothing is lost and nothing is queued twice. Its exit
 * status is qmail-queue's, 31 or 71 only when the policy says so, and 71 when the message
 * cannot be read or qmail-queue cannot be started (as the Python filter).
 *
 * QREMOTE_HOME, QREMOTE_FALLBACK and QREMOTE_MARKER come from qremote-config.h, which
 * `qremote install` writes next to this file when it compiles it.
 */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "qremote-config.h"

#define SOCKET_DIR "qremote-verifyd"
#define SOCKET_PATH SOCKET_DIR "/verifyd.sock"
#define ACCEPT_TIMEOUT_MS 10000
#define MAX_PROMISE_S 300
#define HEADER 5
#define MAX_ANSWER 65536
#define EXIT_PERMANENT 31
#define EXIT_TEMPORARY 71

const char qremote_marker[] = QREMOTE_MARKER;

extern char **environ;

static const char *home;

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

/* One line to qmail-smtpd's log, as the Python filter writes them. */
static void say(const char *text, size_t len)
{
    static const char prefix[] = "qremote-dkimverify: ";
    (void)write_all(2, prefix, sizeof prefix - 1);
    (void)write_all(2, text, len);
    (void)write_all(2, "\n", 1);
}

/* The environment without QMAILQUEUE (qmail-queue must not call us again), plus one
 * entry when extra is not NULL. */
static char **environment(const char *extra)
{
    size_t n = 0;
    while (environ && environ[n])
        n++;
    char **env = malloc((n + 2) * sizeof *env);
    if (!env)
        return environ;
    size_t at = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "QMAILQUEUE=", 11) != 0)
            env[at++] = environ[i];
    if (extra)
        env[at++] = (char *)extra;
    env[at] = NULL;
    return env;
}

/* Make fd our stdin, from its start. */
static int as_stdin(int fd)
{
    if (lseek(fd, 0, SEEK_SET) == -1 || dup2(fd, 0) == -1)
        return -1;
    if (fd != 0)
        close(fd);
    return 0;
}

/* Run the real qmail-queue on the message in fd; never returns. */
static void exec_queue(int fd)
{
    const char *program = getenv("QMAILQUEUE_ORIG");
    char *path = NULL;
    if (!program || !*program) {
        size_t len = strlen(home) + sizeof "/bin/qmail-queue";
        path = malloc(len);
        if (!path)
            _exit(EXIT_TEMPORARY);
        snprintf(path, len, "%s/bin/qmail-queue", home);
        program = path;
    }
    if (as_stdin(fd) == 0) {
        char *argv[] = {(char *)program, NULL};
        execve(program, argv, environment(NULL));
    }
    char line[512];
    int n = snprintf(line, sizeof line, "cannot run %s: %s", program, strerror(errno));
    say(line, n < 0 ? 0 : (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    _exit(EXIT_TEMPORARY);
}

/* The Python path on the spooled message, told why; never returns. When even that
 * cannot start, the message goes on unchanged: never lost, never refused for our sake. */
static void fallback(int msg, const char *why)
{
    static char env[300];
    snprintf(env, sizeof env, "QREMOTE_VERIFYD_FAILED=%s", why);
    if (msg < 0 || as_stdin(msg) == 0) {
        char *argv[] = {(char *)QREMOTE_FALLBACK, NULL};
        execve(QREMOTE_FALLBACK, argv, environment(env));
    }
    static const char text[] =
        "cannot start " QREMOTE_FALLBACK "; message passed on unchanged";
    say(text, sizeof text - 1);
    if (msg < 0)
        _exit(EXIT_TEMPORARY);
    exec_queue(msg);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* fd 0 into a memory file; its size in *size. -1 when it cannot be read. */
static int spool(off_t *size)
{
    int fd = memfd_create("qremote-dkimverify-in", MFD_CLOEXEC);
    if (fd == -1)
        return -1;
    static char buf[1 << 16];
    *size = 0;
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            return fd;
        if (write_all(fd, buf, (size_t)n) == -1)
            return -1;
        *size += n;
    }
}

/* Is the process on the socket our verifyd? Only the owner of its folder (qmail-smtpd's
 * user; root made it for them) can put a socket there, so anyone else answering on it is
 * an impostor, and its verdicts would be forged ones. */
static int genuine(int sock)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    struct stat st;
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) == -1 ||
        stat(SOCKET_DIR, &st) == -1)
        return 0;
    return cred.uid == st.st_uid;
}

/* tcpserver's TCPREMOTEIP, when it looks like an address (the daemon checks it again):
 * the client's address for ARC's smtp.remote-ip. NULL otherwise. */
static const char *remote_ip(void)
{
    const char *ip = getenv("TCPREMOTEIP");
    if (!ip || !*ip || strlen(ip) > 45 || strspn(ip, "0123456789abcdefABCDEF:.") != strlen(ip))
        return NULL;
    return ip;
}

/* Send the request with the message attached. 0 on success. */
static int send_request(int sock, int msg, off_t size)
{
    char req[HEADER + 24 + 47];
    const char *ip = remote_ip();
    int digits = snprintf(req + HEADER, sizeof req - HEADER, ip ? "%lld %s" : "%lld",
                          (long long)size, ip);
    req[0] = 'V';
    req[1] = req[2] = req[3] = 0;
    req[4] = (char)digits;
    char control[CMSG_SPACE(sizeof(int))];
    memset(control, 0, sizeof control);
    struct iovec iov = {.iov_base = req, .iov_len = HEADER + (size_t)digits};
    struct msghdr m = {0};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = control;
    m.msg_controllen = sizeof control;
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &msg, sizeof msg);
    ssize_t n;
    do
        n = sendmsg(sock, &m, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n == (ssize_t)iov.iov_len ? 0 : -1;  /* a few bytes: one send or a dead peer */
}

struct answer {
    char kind;
    char text[MAX_ANSWER + 1];
    size_t len;
    int fd;  /* the new message ('Q'), else -1 */
    const char *why;  /* when no answer came */
};

/* Read frames until the answer, within the waits; fills *a. */
static void converse(int sock, struct answer *a)
{
    static char in[HEADER + MAX_ANSWER];
    size_t have = 0;
    long long deadline = now_ms() + ACCEPT_TIMEOUT_MS;
    int accepted = 0;
    for (;;) {
        long long left = deadline - now_ms();
        struct pollfd p = {.fd = sock, .events = POLLIN};
        int ready = left > 0 ? poll(&p, 1, (int)left) : 0;
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready <= 0) {
            a->why = accepted ? "verifyd did not answer in the time it promised"
                              : "verifyd did not take the message";
            return;
        }
        char control[CMSG_SPACE(4 * sizeof(int))];
        struct iovec iov = {.iov_base = in + have, .iov_len = sizeof in - have};
        struct msghdr m = {0};
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        m.msg_control = control;
        m.msg_controllen = sizeof control;
        ssize_t got = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
        if (got < 0 && errno == EINTR)
            continue;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                continue;
            size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < count; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                if (a->fd == -1)
                    a->fd = fd;
                else
                    close(fd);
            }
        }
        if (got <= 0) {
            a->why = "verifyd closed the connection before it answered";
            return;
        }
        have += (size_t)got;
        while (have >= HEADER) {
            uint32_t size = (uint32_t)(unsigned char)in[1] << 24 |
                            (uint32_t)(unsigned char)in[2] << 16 |
                            (uint32_t)(unsigned char)in[3] << 8 | (uint32_t)(unsigned char)in[4];
            if (size > MAX_ANSWER) {
                a->why = "verifyd sent an answer too long";
                return;
            }
            if (have < HEADER + (size_t)size)
                break;
            char kind = in[0];
            if (kind == 'A' && !accepted) {
                char num[16] = {0};
                memcpy(num, in + HEADER, size < sizeof num - 1 ? size : sizeof num - 1);
                long promise = strtol(num, NULL, 10);
                if (promise <= 0 || promise > MAX_PROMISE_S)
                    promise = MAX_PROMISE_S;
                accepted = 1;
                deadline = now_ms() + promise * 1000LL;
            } else if (accepted && strchr("QUJF", kind) && kind) {
                a->kind = kind;
                memcpy(a->text, in + HEADER, size);
                a->len = size;
                a->text[size] = '\0';
                return;
            } else {
                a->why = kind == 'N' ? "verifyd refused the message" : "verifyd answered nonsense";
                return;
            }
            memmove(in, in + HEADER + size, have - HEADER - size);
            have -= HEADER + size;
        }
        if (have == sizeof in) {
            a->why = "verifyd sent an answer too long";
            return;
        }
    }
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);  /* a vanished daemon is an error return */
    (void)argv;
    if (argc > 1 || isatty(0))
        fallback(-1, "asked by hand");  /* --help, --version: the Python path answers */
    home = getenv("QMAILHOME");
    if (!home || !*home)
        home = QREMOTE_HOME;
    off_t size;
    int msg = spool(&size);
    if (msg == -1) {
        char line[200];
        int n = snprintf(line, sizeof line, "cannot read the message: %s", strerror(errno));
        say(line, n < 0 ? 0 : (size_t)n);
        _exit(EXIT_TEMPORARY);
    }
    if (chdir(home) == -1)
        fallback(msg, "cannot enter the qmail home");
    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr = {0};
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, SOCKET_PATH, sizeof SOCKET_PATH);
    if (sock == -1 || connect(sock, (struct sockaddr *)&addr, sizeof addr) == -1)
        fallback(msg, "no verifying daemon");
    if (!genuine(sock))
        fallback(msg, "the process on verifyd's socket is not its folder's owner");
    if (send_request(sock, msg, size) == -1)
        fallback(msg, "verifyd did not take the request");
    static struct answer a;
    a.fd = -1;
    converse(sock, &a);
    close(sock);
    switch (a.kind) {
    case 'Q':
        if (a.fd == -1)
            fallback(msg, "verifyd sent no message");
        close(msg);
        exec_queue(a.fd);
        break;
    case 'U':
        say(a.text, a.len);
        exec_queue(msg);
        break;
    case 'J':
    case 'F':
        say(a.text, a.len);
        _exit(a.kind == 'J' ? EXIT_PERMANENT : EXIT_TEMPORARY);
    default:
        break;
    }
    if (a.fd != -1)
        close(a.fd);
    fallback(msg, a.why ? a.why : "verifyd answered nonsense");
    return 0;
}

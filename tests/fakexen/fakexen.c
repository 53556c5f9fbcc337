/*
 * libfakexen: a stand-in hypervisor for xenstore daemons.
 *
 * LD_PRELOADed into a xenstored (C or OCaml), it replaces the few Xen
 * library calls a xenstore daemon makes (libxenctrl, libxenevtchn,
 * libxengnttab) and redirects /proc/xen/xsd_{kva,port}, so the daemon runs
 * without a hypervisor.  All state lives in files under $FAKEXEN_DIR, so a
 * simulated guest (any process, e.g. Python with mmap + a datagram socket)
 * can play the other side.  The layout is documented in docs/testing.md:
 *
 *   $FAKEXEN_DIR/domains              "<domid> <state>" lines (xc_domain_getinfo)
 *   $FAKEXEN_DIR/dom<N>/ring          4096-byte page: grant ref 1 of domain N
 *   $FAKEXEN_DIR/dom<N>/gnt<R>        any other grant ref R of domain N
 *   $FAKEXEN_DIR/xsd_port             text port number (/proc/xen/xsd_port)
 *   $FAKEXEN_DIR/evtchn/<d>-<p>.sock  AF_UNIX datagram socket: port p of dom d
 *   $FAKEXEN_DIR/evtchn/<d>-<p>.peer  symlink to the peer's .sock, once bound
 *   $FAKEXEN_DIR/virq/<v>/<d>-<p>.sock  symlink to a port bound to VIRQ v
 *
 * A notification is one datagram to the peer's socket; its content is
 * ignored.  Existence of a .sock path is what makes a port allocated.
 */
#define _GNU_SOURCE
#define XC_WANT_COMPAT_MAP_FOREIGN_API 1
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <stddef.h>
#include <unistd.h>

#include <xenctrl.h>
#include <xenevtchn.h>
#include <xengnttab.h>

#define EXPORT __attribute__((visibility("default")))
#define PAGE 4096
#define MAX_PORT 4096

/* ------------------------------------------------------------------ */
/* Paths                                                               */

static int fx_path(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Build "$FAKEXEN_DIR/<fmt>"; fails with ENOENT when the variable is unset
 * so that a daemon started without it reports a plain "no Xen" error. */
static int fx_path(char *buf, size_t len, const char *fmt, ...)
{
    const char *dir = getenv("FAKEXEN_DIR");
    va_list ap;
    int n, m;

    if (!dir || !*dir) {
        errno = ENOENT;
        return -1;
    }
    n = snprintf(buf, len, "%s/", dir);
    va_start(ap, fmt);
    m = vsnprintf(buf + n, len - n, fmt, ap);
    va_end(ap);
    if (n < 0 || m < 0 || (size_t)(n + m) >= len) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

/* The domain this process pretends to run in (the daemon's is dom0). */
static unsigned int fx_domid(void)
{
    const char *s = getenv("FAKEXEN_DOMID");
    return s ? (unsigned int)strtoul(s, NULL, 0) : 0;
}

static void fx_mkdirs(const char *sub)
{
    char p[PATH_MAX];
    if (fx_path(p, sizeof(p), "%s", sub) == 0)
        mkdir(p, 0755);
}

static int fx_sockaddr(struct sockaddr_un *sa, const char *path)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa->sun_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(sa->sun_path, path);
    return 0;
}


/* ------------------------------------------------------------------ */
/* /proc/xen redirection and rlimit clamping (libc interposition)      */

/* If @path is @prefix or below it, return the length of @prefix. */
static size_t fx_under(const char *path, const char *prefix)
{
    size_t n = strlen(prefix);
    return strncmp(path, prefix, n) == 0 && (path[n] == 0 || path[n] == '/')
           ? n : 0;
}

/* Returns the path to use instead of @path, or @path itself.
 * - oxenstored 4.17 has its socket directory compiled in, while C xenstored
 *   reads $XENSTORED_RUNDIR; mapping the compiled-in one onto that variable
 *   lets tests start either daemon the same way.
 * - Only the two /proc/xen nodes a local xenstored reads are redirected;
 *   anything else there fails as it would on a non-Xen host. */
static const char *fx_redirect(const char *path, char *buf, size_t len)
{
    const char *rundir = getenv("XENSTORED_RUNDIR");
    size_t n;

    if (!path)
        return path;
    if (rundir && *rundir &&
        ((n = fx_under(path, "/var/run/xenstored")) ||
         (n = fx_under(path, "/run/xenstored")))) {
        if ((size_t)snprintf(buf, len, "%s%s", rundir, path + n) >= len)
            return path;
        return buf;
    }
    if (strncmp(path, "/proc/xen/", 10) != 0)
        return path;
    if (strcmp(path + 10, "xsd_kva") == 0 &&
        fx_path(buf, len, "dom0/ring") == 0)
        return buf;
    if (strcmp(path + 10, "xsd_port") == 0 &&
        fx_path(buf, len, "xsd_port") == 0)
        return buf;
    return path;
}

#define REAL(name) \
    static __typeof__(name) *real_##name; \
    if (!real_##name) real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

/* The mode argument is only present with O_CREAT/O_TMPFILE, but reading
 * it unconditionally is what glibc itself does and is harmless. */
#define OPEN_WRAPPER(name, ...) \
    EXPORT int name(const char *path, int flags, ...) \
    { \
        char buf[PATH_MAX]; va_list ap; mode_t mode; \
        REAL(name); \
        va_start(ap, flags); mode = va_arg(ap, mode_t); va_end(ap); \
        return real_##name(fx_redirect(path, buf, sizeof(buf)), flags, mode); \
    }
OPEN_WRAPPER(open)
OPEN_WRAPPER(open64)

#define OPENAT_WRAPPER(name) \
    EXPORT int name(int dfd, const char *path, int flags, ...) \
    { \
        char buf[PATH_MAX]; va_list ap; mode_t mode; \
        REAL(name); \
        va_start(ap, flags); mode = va_arg(ap, mode_t); va_end(ap); \
        return real_##name(dfd, fx_redirect(path, buf, sizeof(buf)), flags, mode); \
    }
OPENAT_WRAPPER(openat)
OPENAT_WRAPPER(openat64)

/* Fortified callers (-D_FORTIFY_SOURCE) come in through these. */
extern int __open_2(const char *, int);
extern int __open64_2(const char *, int);
EXPORT int __open_2(const char *path, int flags)
{
    char buf[PATH_MAX];
    REAL(__open_2);
    return real___open_2(fx_redirect(path, buf, sizeof(buf)), flags);
}
EXPORT int __open64_2(const char *path, int flags)
{
    char buf[PATH_MAX];
    REAL(__open64_2);
    return real___open64_2(fx_redirect(path, buf, sizeof(buf)), flags);
}

EXPORT FILE *fopen(const char *path, const char *mode)
{
    char buf[PATH_MAX];
    REAL(fopen);
    return real_fopen(fx_redirect(path, buf, sizeof(buf)), mode);
}
EXPORT FILE *fopen64(const char *path, const char *mode)
{
    char buf[PATH_MAX];
    REAL(fopen64);
    return real_fopen64(fx_redirect(path, buf, sizeof(buf)), mode);
}

EXPORT int unlink(const char *path)
{
    char buf[PATH_MAX];
    REAL(unlink);
    return real_unlink(fx_redirect(path, buf, sizeof(buf)));
}

EXPORT int mkdir(const char *path, mode_t mode)
{
    char buf[PATH_MAX];
    REAL(mkdir);
    return real_mkdir(fx_redirect(path, buf, sizeof(buf)), mode);
}

EXPORT int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    const struct sockaddr_un *sa = (const struct sockaddr_un *)addr;
    struct sockaddr_un copy;
    char buf[PATH_MAX], path[sizeof(sa->sun_path) + 1];
    const char *np;
    REAL(bind);

    if (addr->sa_family != AF_UNIX || len <= offsetof(struct sockaddr_un, sun_path)
        || !sa->sun_path[0])
        return real_bind(fd, addr, len);
    memset(path, 0, sizeof(path));
    memcpy(path, sa->sun_path, len - offsetof(struct sockaddr_un, sun_path));
    np = fx_redirect(path, buf, sizeof(buf));
    if (np == path)
        return real_bind(fd, addr, len);
    if (fx_sockaddr(&copy, np) != 0)
        return -1;
    return real_bind(fd, (struct sockaddr *)&copy, sizeof(copy));
}

/* Daemons raise RLIMIT_NOFILE far beyond what a container allows; clamp to
 * the hard limit we already have instead of failing with EPERM. */
static void fx_clamp_nofile(int resource, struct rlimit *lim)
{
    struct rlimit cur;
    if (resource != RLIMIT_NOFILE || getrlimit(RLIMIT_NOFILE, &cur) != 0)
        return;
    if (lim->rlim_max > cur.rlim_max)
        lim->rlim_max = cur.rlim_max;
    if (lim->rlim_cur > lim->rlim_max)
        lim->rlim_cur = lim->rlim_max;
}

EXPORT int setrlimit(__rlimit_resource_t resource, const struct rlimit *rlim)
{
    struct rlimit l = *rlim;
    REAL(setrlimit);
    if (real_setrlimit(resource, rlim) == 0)
        return 0;
    fx_clamp_nofile(resource, &l);
    return real_setrlimit(resource, &l);
}
EXPORT int setrlimit64(__rlimit_resource_t resource, const struct rlimit64 *rlim)
{
    struct rlimit l = { rlim->rlim_cur, rlim->rlim_max };
    return setrlimit(resource, &l);
}
EXPORT int prlimit(pid_t pid, __rlimit_resource_t resource,
                   const struct rlimit *nl, struct rlimit *ol)
{
    struct rlimit l;
    REAL(prlimit);
    if (!nl)
        return real_prlimit(pid, resource, nl, ol);
    if (real_prlimit(pid, resource, nl, ol) == 0)
        return 0;
    l = *nl;
    fx_clamp_nofile(resource, &l);
    return real_prlimit(pid, resource, &l, ol);
}
EXPORT int prlimit64(pid_t pid, __rlimit_resource_t resource,
                     const struct rlimit64 *nl, struct rlimit64 *ol)
{
    struct rlimit n, o;
    int rc;
    if (nl) {
        n.rlim_cur = nl->rlim_cur;
        n.rlim_max = nl->rlim_max;
    }
    rc = prlimit(pid, resource, nl ? &n : NULL, ol ? &o : NULL);
    if (rc == 0 && ol) {
        ol->rlim_cur = o.rlim_cur;
        ol->rlim_max = o.rlim_max;
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* libxenctrl                                                          */

struct xc_interface_core { int unused; };

EXPORT xc_interface *xc_interface_open(xentoollog_logger *logger,
                                       xentoollog_logger *dombuild_logger,
                                       unsigned open_flags)
{
    (void)logger; (void)dombuild_logger; (void)open_flags;
    return calloc(1, sizeof(struct xc_interface_core));
}

EXPORT int xc_interface_close(xc_interface *xch)
{
    free(xch);
    return 0;
}

struct fx_dom { unsigned int domid, flags; };

/* Parse $FAKEXEN_DIR/domains into XEN_DOMINF_* flags, sorted by domid.
 * Read afresh on every call so tests change domains by rewriting the file
 * (write + rename) and then kicking VIRQ_DOM_EXC.  No file: only dom0. */
static int fx_read_domains(struct fx_dom *out, int max)
{
    char p[PATH_MAX], line[256], state[64];
    FILE *f;
    int n = 0, i, j;

    if (fx_path(p, sizeof(p), "domains") != 0)
        return -1;
    f = fopen(p, "r");
    if (!f) {
        out[0].domid = 0;
        out[0].flags = XEN_DOMINF_running;
        return 1;
    }
    while (n < max && fgets(line, sizeof(line), f)) {
        unsigned int domid, reason = 0;
        char *colon;

        state[0] = 0;
        if (line[0] == '#' || sscanf(line, "%u %63s", &domid, state) < 1)
            continue;
        out[n].domid = domid;
        colon = strchr(state, ':');
        if (colon) {
            *colon = 0;
            reason = strtoul(colon + 1, NULL, 0);
        }
        if (!state[0] || !strcmp(state, "running"))
            out[n].flags = XEN_DOMINF_running;
        else if (!strcmp(state, "paused"))
            out[n].flags = XEN_DOMINF_paused;
        else if (!strcmp(state, "shutdown"))
            out[n].flags = XEN_DOMINF_shutdown |
                           ((reason & XEN_DOMINF_shutdownmask)
                            << XEN_DOMINF_shutdownshift);
        else if (!strcmp(state, "crashed"))
            out[n].flags = XEN_DOMINF_shutdown |
                           (SHUTDOWN_crash << XEN_DOMINF_shutdownshift);
        else if (!strcmp(state, "dying"))
            out[n].flags = XEN_DOMINF_dying;
        else
            continue;       /* "dead" or unknown: the domain is gone */
        n++;
    }
    fclose(f);
    for (i = 1; i < n; i++)         /* insertion sort: lists are tiny */
        for (j = i; j > 0 && out[j - 1].domid > out[j].domid; j--) {
            struct fx_dom t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
        }
    return n;
}

EXPORT int xc_domain_getinfolist(xc_interface *xch, uint32_t first,
                                 unsigned int max, xc_domaininfo_t *info)
{
    struct fx_dom doms[256];
    int n = fx_read_domains(doms, 256), i;
    unsigned int got = 0;

    (void)xch;
    if (n < 0)
        return -1;
    for (i = 0; i < n && got < max; i++) {
        if (doms[i].domid < first)
            continue;
        memset(&info[got], 0, sizeof(info[got]));
        info[got].domain = doms[i].domid;
        info[got].flags = doms[i].flags;
        info[got].tot_pages = info[got].max_pages = 256;
        info[got].nr_online_vcpus = 1;
        got++;
    }
    return got;
}

EXPORT int xc_domain_getinfo(xc_interface *xch, uint32_t first,
                             unsigned int max, xc_dominfo_t *info)
{
    xc_domaininfo_t raw[256];
    int n, i;

    if (max > 256)
        max = 256;
    n = xc_domain_getinfolist(xch, first, max, raw);
    for (i = 0; i < n; i++) {
        uint32_t fl = raw[i].flags;
        unsigned int reason = (fl >> XEN_DOMINF_shutdownshift) &
                              XEN_DOMINF_shutdownmask;

        memset(&info[i], 0, sizeof(info[i]));
        info[i].domid = raw[i].domain;
        info[i].dying = !!(fl & XEN_DOMINF_dying);
        info[i].shutdown = !!(fl & XEN_DOMINF_shutdown);
        info[i].crashed = info[i].shutdown && reason == SHUTDOWN_crash;
        info[i].shutdown_reason = reason;
        info[i].paused = !!(fl & XEN_DOMINF_paused);
        info[i].running = !!(fl & XEN_DOMINF_running);
        info[i].nr_pages = raw[i].tot_pages;
        info[i].nr_online_vcpus = raw[i].nr_online_vcpus;
    }
    return n;
}

/* ------------------------------------------------------------------ */
/* Grant and foreign mapping: shared files stand in for guest pages    */

static void *fx_map_page(uint32_t domid, uint32_t ref, int prot)
{
    char p[PATH_MAX];
    void *addr;
    int fd, rc;

    rc = ref == 1 ? fx_path(p, sizeof(p), "dom%u/ring", domid)
                  : fx_path(p, sizeof(p), "dom%u/gnt%u", domid, ref);
    if (rc != 0)
        return NULL;
    fd = open(p, (prot & PROT_WRITE) ? O_RDWR | O_CLOEXEC : O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    addr = mmap(NULL, PAGE, prot, MAP_SHARED, fd, 0);
    close(fd);
    return addr == MAP_FAILED ? NULL : addr;
}

struct xengntdev_handle { int unused; };

EXPORT xengnttab_handle *xengnttab_open(xentoollog_logger *logger,
                                        unsigned open_flags)
{
    (void)logger; (void)open_flags;
    return calloc(1, sizeof(struct xengntdev_handle));
}

EXPORT int xengnttab_close(xengnttab_handle *xgt)
{
    free(xgt);
    return 0;
}

EXPORT int xengnttab_set_max_grants(xengnttab_handle *xgt, uint32_t nr)
{
    (void)xgt; (void)nr;
    return 0;
}

EXPORT void *xengnttab_map_grant_ref(xengnttab_handle *xgt, uint32_t domid,
                                     uint32_t ref, int prot)
{
    (void)xgt;
    return fx_map_page(domid, ref, prot);
}

EXPORT int xengnttab_unmap(xengnttab_handle *xgt, void *start, uint32_t count)
{
    (void)xgt;
    return munmap(start, (size_t)count * PAGE);
}

/* oxenstored maps guest rings by gfn; a guest has exactly one ring page
 * here, so the frame number is ignored. */
EXPORT void *xc_map_foreign_range(xc_interface *xch, uint32_t dom, int size,
                                  int prot, unsigned long mfn)
{
    (void)xch; (void)mfn;
    if (size > PAGE) {
        errno = EINVAL;
        return NULL;
    }
    return fx_map_page(dom, 1, prot);
}

/* ------------------------------------------------------------------ */
/* Event channels                                                      */

struct fx_port {
    evtchn_port_t port;
    int sock;
    unsigned int virq;          /* 0 when not a VIRQ binding */
    char peer[PATH_MAX];        /* "" until known (unbound ports) */
};

struct xenevtchn_handle {
    int epfd;                   /* readable when any port has a datagram */
    unsigned int domid;
    struct fx_port *ports;
    int nports;
};

static struct fx_port *fx_find(xenevtchn_handle *h, evtchn_port_t port)
{
    int i;
    for (i = 0; i < h->nports; i++)
        if (h->ports[i].sock >= 0 && h->ports[i].port == port)
            return &h->ports[i];
    errno = EINVAL;
    return NULL;
}

/* Allocate the lowest free port of our domain.  bind() failing with
 * EADDRINUSE on an existing path makes allocation atomic across every
 * process sharing $FAKEXEN_DIR; a plain file reserves a port too. */
static struct fx_port *fx_alloc(xenevtchn_handle *h)
{
    struct sockaddr_un sa;
    struct epoll_event ev;
    struct fx_port *pt = NULL;
    char p[PATH_MAX];
    evtchn_port_t port;
    int i, s;

    for (i = 0; i < h->nports; i++)
        if (h->ports[i].sock < 0)
            pt = &h->ports[i];
    if (!pt) {
        struct fx_port *np = realloc(h->ports, (h->nports + 1) * sizeof(*np));
        if (!np)
            return NULL;
        h->ports = np;
        pt = &h->ports[h->nports++];
        pt->sock = -1;
    }

    fx_mkdirs("evtchn");
    s = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0)
        return NULL;
    for (port = 1; port < MAX_PORT; port++) {
        if (fx_path(p, sizeof(p), "evtchn/%u-%u.sock", h->domid, port) != 0 ||
            fx_sockaddr(&sa, p) != 0)
            goto fail;
        if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) == 0)
            break;
        if (errno != EADDRINUSE)
            goto fail;
    }
    if (port == MAX_PORT) {
        errno = ENOSPC;
        goto fail;
    }
    ev.events = EPOLLIN;
    ev.data.u32 = port;
    if (epoll_ctl(h->epfd, EPOLL_CTL_ADD, s, &ev) != 0) {
        unlink(p);
        goto fail;
    }
    pt->port = port;
    pt->sock = s;
    pt->virq = 0;
    pt->peer[0] = 0;
    return pt;
fail:
    close(s);
    return NULL;
}

static xenevtchn_handle *fx_evtchn_new(unsigned int flags)
{
    xenevtchn_handle *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->epfd = epoll_create1((flags & XENEVTCHN_NO_CLOEXEC) ? 0 : EPOLL_CLOEXEC);
    if (h->epfd < 0) {
        free(h);
        return NULL;
    }
    h->domid = fx_domid();
    return h;
}

EXPORT xenevtchn_handle *xenevtchn_open(xentoollog_logger *logger,
                                        unsigned int flags)
{
    (void)logger;
    return fx_evtchn_new(flags);
}

/* Live update hands the new daemon the old evtchn fd.  Ports do not survive
 * that here: the fd is dropped and a fresh handle returned. */
EXPORT xenevtchn_handle *xenevtchn_fdopen(xentoollog_logger *logger, int fd,
                                          unsigned open_flags)
{
    (void)logger;
    close(fd);
    return fx_evtchn_new(open_flags);
}

EXPORT int xenevtchn_fd(xenevtchn_handle *h)
{
    return h->epfd;
}

EXPORT xenevtchn_port_or_error_t
xenevtchn_bind_unbound_port(xenevtchn_handle *h, uint32_t domid)
{
    struct fx_port *pt = fx_alloc(h);
    (void)domid;
    return pt ? (int)pt->port : -1;
}

/* Connect our new port with <domid>-<remote_port>: each side's .peer
 * symlink names the other's socket, so a guest that only knows its own
 * port number can find where to send.  Like Xen it does not matter whether
 * the remote side has a listener yet. */
EXPORT xenevtchn_port_or_error_t
xenevtchn_bind_interdomain(xenevtchn_handle *h, uint32_t domid,
                           evtchn_port_t remote_port)
{
    char local[64], remote[64], p[PATH_MAX];
    struct fx_port *pt = fx_alloc(h);

    if (!pt)
        return -1;
    snprintf(local, sizeof(local), "%u-%u", h->domid, pt->port);
    snprintf(remote, sizeof(remote), "%u-%u", domid, remote_port);
    fx_path(pt->peer, sizeof(pt->peer), "evtchn/%s.sock", remote);

    fx_path(p, sizeof(p), "evtchn/%s.peer", remote);
    unlink(p);
    strcat(local, ".sock");
    if (symlink(local, p) != 0)
        perror("fakexen: symlink");
    fx_path(p, sizeof(p), "evtchn/%u-%u.peer", h->domid, pt->port);
    unlink(p);
    strcat(remote, ".sock");
    if (symlink(remote, p) != 0)
        perror("fakexen: symlink");
    return pt->port;
}

/* A VIRQ port has no peer; the test "raises" the VIRQ by sending a
 * datagram to every socket linked from $FAKEXEN_DIR/virq/<virq>/. */
EXPORT xenevtchn_port_or_error_t
xenevtchn_bind_virq(xenevtchn_handle *h, unsigned int virq)
{
    char p[PATH_MAX], target[64];
    struct fx_port *pt = fx_alloc(h);

    if (!pt)
        return -1;
    pt->virq = virq;
    fx_mkdirs("virq");
    snprintf(target, sizeof(target), "virq/%u", virq);
    fx_mkdirs(target);
    snprintf(target, sizeof(target), "../../evtchn/%u-%u.sock",
             h->domid, pt->port);
    fx_path(p, sizeof(p), "virq/%u/%u-%u.sock", virq, h->domid, pt->port);
    unlink(p);
    if (symlink(target, p) != 0)
        perror("fakexen: symlink");
    return pt->port;
}

EXPORT int xenevtchn_notify(xenevtchn_handle *h, evtchn_port_t port)
{
    struct fx_port *pt = fx_find(h, port);
    struct sockaddr_un sa;
    char msg[32], p[PATH_MAX], link[PATH_MAX];
    const char *dest;
    ssize_t n;

    if (!pt)
        return -1;
    if (pt->virq)
        return 0;
    dest = pt->peer;
    if (!dest[0]) {
        /* Unbound port: the remote end may have bound to us since. */
        if (fx_path(p, sizeof(p), "evtchn/%u-%u.peer", h->domid, port) != 0)
            return 0;
        n = readlink(p, link, sizeof(link) - 1);
        if (n <= 0)
            return 0;
        link[n] = 0;
        if (fx_path(p, sizeof(p), "evtchn/%s", link) != 0)
            return 0;
        dest = p;
    }
    if (fx_sockaddr(&sa, dest) != 0)
        return 0;
    n = snprintf(msg, sizeof(msg), "%u-%u", h->domid, port);
    /* Errors are swallowed on purpose: a missing listener (ENOENT,
     * ECONNREFUSED) is a peer not looking, and a full queue (EAGAIN)
     * already means "pending"; Xen's notify never fails for those. */
    sendto(pt->sock, msg, n, MSG_DONTWAIT, (struct sockaddr *)&sa, sizeof(sa));
    return 0;
}

/* Xen keeps one pending bit per port, so all queued datagrams of the ready
 * port are consumed at once and the port is reported a single time. */
EXPORT xenevtchn_port_or_error_t xenevtchn_pending(xenevtchn_handle *h)
{
    struct epoll_event ev;
    struct fx_port *pt;
    char buf[64];

    if (epoll_wait(h->epfd, &ev, 1, 0) != 1) {
        errno = EAGAIN;
        return -1;
    }
    pt = fx_find(h, ev.data.u32);
    if (!pt)
        return -1;
    while (recv(pt->sock, buf, sizeof(buf), MSG_DONTWAIT) >= 0)
        ;
    return pt->port;
}

EXPORT int xenevtchn_unmask(xenevtchn_handle *h, evtchn_port_t port)
{
    (void)h; (void)port;
    return 0;
}

EXPORT int xenevtchn_unbind(xenevtchn_handle *h, evtchn_port_t port)
{
    struct fx_port *pt = fx_find(h, port);
    char p[PATH_MAX], mine[64], link[64];
    ssize_t n;

    if (!pt)
        return -1;
    epoll_ctl(h->epfd, EPOLL_CTL_DEL, pt->sock, NULL);
    close(pt->sock);
    pt->sock = -1;
    snprintf(mine, sizeof(mine), "%u-%u.sock", h->domid, port);
    if (fx_path(p, sizeof(p), "evtchn/%s", mine) == 0)
        unlink(p);
    if (fx_path(p, sizeof(p), "evtchn/%u-%u.peer", h->domid, port) == 0)
        unlink(p);
    if (pt->virq &&
        fx_path(p, sizeof(p), "virq/%u/%s", pt->virq, mine) == 0)
        unlink(p);
    /* The remote port becomes unbound again: drop its link back to us. */
    if (pt->peer[0]) {
        size_t l = strlen(pt->peer);
        snprintf(p, sizeof(p), "%.*s.peer", (int)(l - 5), pt->peer);
        n = readlink(p, link, sizeof(link) - 1);
        if (n > 0) {
            link[n] = 0;
            if (strcmp(link, mine) == 0)
                unlink(p);
        }
    }
    return 0;
}

EXPORT int xenevtchn_close(xenevtchn_handle *h)
{
    int i;
    if (!h)
        return 0;
    for (i = 0; i < h->nports; i++)
        if (h->ports[i].sock >= 0)
            xenevtchn_unbind(h, h->ports[i].port);
    close(h->epfd);
    free(h->ports);
    free(h);
    return 0;
}

EXPORT int xenevtchn_restrict(xenevtchn_handle *h, domid_t domid)
{
    (void)h; (void)domid;
    return 0;
}

/* AIO contexts of closed log segments are destroyed off the Raft loop.
 *
 * libraft 0.15 writes each open log segment through a kernel AIO context of
 * its own and, when the segment is full and its writer closes, calls
 * io_destroy(2) on the libuv loop thread. io_destroy waits for an RCU grace
 * period before it returns: 32-40 ms on this class of machine, idle or not.
 * With 8 MiB segments that is a full stop of the Raft loop (no appends, no
 * heartbeats, no applies, no replies) every ~12 000 entries: at 256 writes in
 * flight it was the whole of the p99 (49 ms against a p50 of 12).
 *
 * libraft reaches the kernel through libc's syscall(), so this object
 * defines syscall() for the process: every call goes straight to libc's,
 * except io_destroy, which is queued for a reaper thread and answered 0 at
 * once. That is safe because libraft destroys a context only after every
 * request on it completed (and ignores the result); the reaper destroys it a
 * grace period later, and process exit releases whatever is still queued.
 * If the reaper cannot be started, or 1024 contexts are already waiting, the
 * call is made in place, as before.
 *
 * This relies on how libraft 0.15 uses its contexts (every io_destroy comes
 * after the last request on the context completed), so the build enables it
 * only for libraft 0.15.x (CONS_AIO_DEFER, consensus/CMakeLists.txt); with
 * another version syscall() is not defined here and libc's is used. */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>

#include "consensus/cons_internal.h"

#ifdef CONS_AIO_DEFER

#define AIO_MAX_QUEUED 1024

typedef long (*syscall_fn)(long number, ...);

struct aio_ctx {
    struct aio_ctx *next;
    long ctx;
};

static _Atomic(syscall_fn) libc_syscall;
static pthread_once_t reaper_once = PTHREAD_ONCE_INIT;
static int reaper_up;
static pthread_mutex_t reaper_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t reaper_cond = PTHREAD_COND_INITIALIZER;
static struct aio_ctx *reaper_head;
static size_t reaper_queued;
static atomic_ullong n_deferred;
static atomic_ullong n_reaped;

/* libc's syscall(), looked up before main() so that the wrapper does no
 * lookup later (absl issues futex calls through syscall() from paths that
 * must stay async-signal-safe). */
__attribute__((constructor)) static void aio_resolve(void)
{
    atomic_store_explicit(&libc_syscall,
                          (syscall_fn)dlsym(RTLD_NEXT, "syscall"),
                          memory_order_release);
}

static syscall_fn real_syscall(void)
{
    syscall_fn fn = atomic_load_explicit(&libc_syscall, memory_order_acquire);

    if (fn == NULL) {
        aio_resolve();
        fn = atomic_load_explicit(&libc_syscall, memory_order_acquire);
    }
    return fn;
}

static void *reaper_main(void *arg)
{
    syscall_fn sys = real_syscall();

    (void)arg;
    for (;;) {
        struct aio_ctx *c;

        pthread_mutex_lock(&reaper_lock);
        while (reaper_head == NULL) {
            pthread_cond_wait(&reaper_cond, &reaper_lock);
        }
        c = reaper_head;
        reaper_head = c->next;
        reaper_queued--;
        pthread_mutex_unlock(&reaper_lock);
        sys(SYS_io_destroy, c->ctx);
        free(c);
        atomic_fetch_add(&n_reaped, 1);
    }
    return NULL;
}

static void reaper_start(void)
{
    pthread_attr_t attr;
    pthread_t t;

    if (pthread_attr_init(&attr) != 0) {
        return;
    }
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    reaper_up = pthread_create(&t, &attr, reaper_main, NULL) == 0;
    pthread_attr_destroy(&attr);
}

/* Queue @ctx for the reaper. 0, or -1 to destroy it in place. errno is
 * left as the caller had it either way (libraft reads errno after its
 * io_destroy when it probes for async I/O). */
static int defer_io_destroy(long ctx)
{
    int saved = errno;
    struct aio_ctx *c;
    int rv = -1;

    pthread_once(&reaper_once, reaper_start);
    if (!reaper_up || (c = malloc(sizeof *c)) == NULL) {
        goto out;
    }
    c->ctx = ctx;
    pthread_mutex_lock(&reaper_lock);
    if (reaper_queued >= AIO_MAX_QUEUED) {
        pthread_mutex_unlock(&reaper_lock);
        free(c);
        goto out;
    }
    c->next = reaper_head;
    reaper_head = c;
    reaper_queued++;
    pthread_cond_signal(&reaper_cond);
    pthread_mutex_unlock(&reaper_lock);
    atomic_fetch_add(&n_deferred, 1);
    rv = 0;
out:
    errno = saved;
    return rv;
}

/* The six argument words are read whatever the caller passed, as libc's
 * own syscall() does; the sanitizer is told not to instrument that. */
__attribute__((no_sanitize_address)) long syscall(long number, ...)
{
    syscall_fn sys;
    va_list ap;
    long a[6];

    va_start(ap, number);
    for (int i = 0; i < 6; i++) {
        a[i] = va_arg(ap, long);
    }
    va_end(ap);
    if (number == SYS_io_destroy && defer_io_destroy(a[0]) == 0) {
        return 0;
    }
    sys = real_syscall();
    if (sys == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return sys(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}

void cons_aio_counts(uint64_t *deferred, uint64_t *reaped)
{
    *deferred = atomic_load(&n_deferred);
    *reaped = atomic_load(&n_reaped);
}

int cons_aio_enabled(void)
{
    return 1;
}

#else /* !CONS_AIO_DEFER */

void cons_aio_counts(uint64_t *deferred, uint64_t *reaped)
{
    *deferred = 0;
    *reaped = 0;
}

int cons_aio_enabled(void)
{
    return 0;
}

#endif

/* Log segments are written out with zeros when they are prepared.
 *
 * libraft prepares each open log segment in a libuv worker thread with
 * posix_fallocate(3), which on ext4 (and XFS) reserves unwritten extents.
 * The first write into an unwritten block must convert the extent, so every
 * O_DSYNC append of a new block also commits a journal transaction: on this
 * class of machine a 4 KiB O_DIRECT|O_DSYNC write costs 0.20 ms p50 and
 * 0.85 ms p99 into a fallocated file against 0.13 and 0.25 ms into one whose
 * blocks were written before. Three nodes on one file system share its
 * journal, so each Raft round trip paid that cost twice or three times.
 *
 * This object defines posix_fallocate() for the process: it calls libc's
 * and then writes zeros over the part of the range that lay beyond the end
 * of the file (the bytes posix_fallocate guarantees to read as zero anyway),
 * in the worker thread that prepares the segment, off the Raft loop. For
 * libraft's use (a file it just created with O_EXCL, filled from offset 0,
 * no other writer) the caller sees posix_fallocate's contract; what changes
 * is that the appends later overwrite written blocks. A descriptor opened
 * O_APPEND or O_DIRECT is only allocated, as by libc (pwrite would append,
 * or need aligned buffers). Nothing else in the process calls
 * posix_fallocate. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "consensus/cons_internal.h"

#define SEGFILL_CHUNK (1024 * 1024)

typedef int (*fallocate_fn)(int fd, off_t offset, off_t len);

static _Atomic(fallocate_fn) libc_fallocate;
static atomic_ullong n_files;
static atomic_ullong n_bytes;
/* Zeros for pwrite; never written, so their pages stay the shared zero
 * page and cost no memory. */
static char zeros[SEGFILL_CHUNK];

__attribute__((constructor)) static void segfill_resolve(void)
{
    atomic_store_explicit(&libc_fallocate,
                          (fallocate_fn)dlsym(RTLD_NEXT, "posix_fallocate"),
                          memory_order_release);
}

static fallocate_fn real_fallocate(void)
{
    fallocate_fn fn = atomic_load_explicit(&libc_fallocate,
                                           memory_order_acquire);

    if (fn == NULL) {
        segfill_resolve();
        fn = atomic_load_explicit(&libc_fallocate, memory_order_acquire);
    }
    return fn;
}

/* Zeros over [from, to) of @fd, made durable: by O_DSYNC if the file was
 * opened with it (libraft's segments are), else by one fdatasync. 0, an
 * error number, or -1 if @fd is not one to fill (left allocated only). */
static int zero_range(int fd, off_t from, off_t to)
{
    int fl = fcntl(fd, F_GETFL);

    if (fl < 0) {
        return errno;
    }
    if (fl & (O_APPEND | O_DIRECT)) {
        return -1; /* allocated only */
    }
    while (from < to) {
        size_t n = (size_t)(to - from) < sizeof zeros ? (size_t)(to - from)
                                                      : sizeof zeros;
        ssize_t w = pwrite(fd, zeros, n, from);

        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno;
        }
        if (w == 0) {
            return EIO;
        }
        from += w;
    }
    if (!(fl & (O_DSYNC | O_SYNC)) && fdatasync(fd) != 0) {
        return errno;
    }
    return 0;
}

int posix_fallocate(int fd, off_t offset, off_t len)
{
    fallocate_fn fn = real_fallocate();
    int saved = errno;
    struct stat st;
    off_t from;
    int rv;

    if (fn == NULL) {
        return ENOSYS;
    }
    /* The old size decides which bytes are new: data already in the file
     * is never touched. */
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || offset < 0 ||
        len <= 0) {
        errno = saved;
        return fn(fd, offset, len);
    }
    rv = fn(fd, offset, len);
    if (rv != 0) {
        return rv;
    }
    from = offset > st.st_size ? offset : st.st_size;
    if (from < offset + len) {
        rv = zero_range(fd, from, offset + len);
        if (rv == 0) {
            atomic_fetch_add(&n_files, 1);
            atomic_fetch_add(&n_bytes, (unsigned long long)(offset + len -
                                                            from));
        } else if (rv < 0) {
            rv = 0;
        }
    }
    errno = saved;
    return rv;
}

void cons_segfill_counts(uint64_t *files, uint64_t *bytes)
{
    *files = atomic_load(&n_files);
    *bytes = atomic_load(&n_bytes);
}

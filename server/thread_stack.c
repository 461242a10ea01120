/* Worker stack size floor for the peftserve executable.
 *
 * Debian's CivetWeb 1.15 is built with USE_STACK_SIZE=102400: its workers
 * get 100 KiB stacks through pthread_attr_setstacksize, with no run-time
 * option to change it. That is tight for request handling, and in sanitizer
 * builds pthread_create fails outright (EINVAL: ASan's static TLS does not
 * fit). This definition lives in the executable, so it interposes the libc
 * function for every caller in the process, and raises requests below
 * 1 MiB to 1 MiB (virtual; pages are committed only when touched).
 * Linked only into peftserve (see CMakeLists.txt), never into libraries. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#define THREAD_STACK_FLOOR ((size_t)1 << 20)

typedef int (*setstacksize_fn)(pthread_attr_t *, size_t);

int pthread_attr_setstacksize(pthread_attr_t *attr, size_t size) {
    static _Atomic(setstacksize_fn) real;
    setstacksize_fn f = atomic_load(&real);
    if (!f) {
        f = (setstacksize_fn)dlsym(RTLD_NEXT, "pthread_attr_setstacksize");
        atomic_store(&real, f);
    }
    if (!f) return EINVAL;
    return f(attr, size < THREAD_STACK_FLOOR ? THREAD_STACK_FLOOR : size);
}

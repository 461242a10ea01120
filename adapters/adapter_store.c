/* The registry's folder of adapters (see adapter_store.h). Files are written
 * with fsync before the rename so a power cut cannot leave a renamed folder
 * with empty files. */
#include "adapter_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "adapter.h"
#include "base/log.h"

static const char *const store_files[] = {"adapter_config.json", "adapter_model.safetensors"};
static atomic_uint store_counter;

static ps_status mkdir_p(const char *dir, ps_err *err) {
    char buf[ADAPTER_STORE_PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf)
        return ps_errf(err, PS_EINVAL, "adapters dir path too long");
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return ps_errf(err, PS_EIO, "cannot create '%s': %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return ps_errf(err, PS_EIO, "cannot create '%s': %s", buf, strerror(errno));
    struct stat st;
    if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
        return ps_errf(err, PS_EIO, "adapters dir '%s' is not a folder", buf);
    return PS_OK;
}

void adapter_store_discard(const char *path) {
    char f[ADAPTER_STORE_PATH_MAX + 64];
    for (size_t i = 0; i < sizeof store_files / sizeof store_files[0]; i++) {
        snprintf(f, sizeof f, "%s/%s", path, store_files[i]);
        unlink(f);
    }
    if (rmdir(path) != 0 && errno != ENOENT)
        PS_LOG_WARN("adapters", "cannot remove '%s': %s", path, strerror(errno));
}

ps_status adapter_store_prepare(const char *dir, ps_err *err) {
    ps_status s = mkdir_p(dir, err);
    if (s) return s;
    DIR *d = opendir(dir);
    if (!d) return ps_errf(err, PS_EIO, "cannot open '%s': %s", dir, strerror(errno));
    struct dirent *e;
    char path[ADAPTER_STORE_PATH_MAX];
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, ".tmp-", 5) && strncmp(e->d_name, ".trash-", 7)) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        PS_LOG_INFO("adapters", "removing leftover '%s'", path);
        adapter_store_discard(path);
    }
    closedir(d);
    return PS_OK;
}

static ps_status write_file(const char *path, const void *data, size_t n, ps_err *err) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return ps_errf(err, PS_EIO, "cannot create '%s': %s", path, strerror(errno));
    const char *p = data;
    size_t left = n;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            return ps_errf(err, PS_EIO, "cannot write '%s': %s", path, strerror(e));
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0)
        return ps_errf(err, PS_EIO, "cannot flush '%s': %s", path, strerror(errno));
    return PS_OK;
}

static void unique_path(char *out, size_t cap, const char *dir, const char *kind, const char *name) {
    snprintf(out, cap, "%s/.%s-%s-%ld-%u", dir, kind, name, (long)getpid(), atomic_fetch_add(&store_counter, 1));
}

ps_status adapter_store_write(const char *dir, const char *name, const char *config, size_t config_len,
                              const void *st, size_t st_len, char *tmp, size_t cap, ps_err *err) {
    unique_path(tmp, cap, dir, "tmp", name);
    if (mkdir(tmp, 0755) != 0) return ps_errf(err, PS_EIO, "cannot create '%s': %s", tmp, strerror(errno));
    char f[ADAPTER_STORE_PATH_MAX + 64];
    snprintf(f, sizeof f, "%s/%s", tmp, store_files[0]);
    ps_status s = write_file(f, config, config_len, err);
    if (!s) {
        snprintf(f, sizeof f, "%s/%s", tmp, store_files[1]);
        s = write_file(f, st, st_len, err);
    }
    if (s) adapter_store_discard(tmp);
    return s;
}

/* Moves <dir>/<name> aside (when present) and deletes it. */
static ps_status move_away(const char *dir, const char *name, bool *existed, ps_err *err) {
    char cur[ADAPTER_STORE_PATH_MAX], trash[ADAPTER_STORE_PATH_MAX];
    snprintf(cur, sizeof cur, "%s/%s", dir, name);
    unique_path(trash, sizeof trash, dir, "trash", name);
    *existed = false;
    if (rename(cur, trash) != 0) {
        if (errno == ENOENT) return PS_OK;
        return ps_errf(err, PS_EIO, "cannot move '%s' away: %s", cur, strerror(errno));
    }
    *existed = true;
    adapter_store_discard(trash);
    return PS_OK;
}

ps_status adapter_store_commit(const char *dir, const char *tmp, const char *name, ps_err *err) {
    bool existed;
    ps_status s = move_away(dir, name, &existed, err);
    if (s) return s;
    char dst[ADAPTER_STORE_PATH_MAX];
    snprintf(dst, sizeof dst, "%s/%s", dir, name);
    if (rename(tmp, dst) != 0) return ps_errf(err, PS_EIO, "cannot rename '%s' to '%s': %s", tmp, dst, strerror(errno));
    return PS_OK;
}

ps_status adapter_store_remove(const char *dir, const char *name, ps_err *err) {
    bool existed;
    return move_away(dir, name, &existed, err);
}

int adapter_store_list(const char *dir, char ***names, ps_err *err) {
    *names = NULL;
    DIR *d = opendir(dir);
    if (!d) return ps_errf(err, PS_EIO, "cannot open '%s': %s", dir, strerror(errno)), -1;
    int n = 0, cap = 0;
    struct dirent *e;
    char path[ADAPTER_STORE_PATH_MAX];
    while ((e = readdir(d))) {
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (adapter_name_check(e->d_name, NULL) != PS_OK || stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **g = realloc(*names, sizeof *g * (size_t)cap);
            if (!g) goto oom;
            *names = g;
        }
        if (!((*names)[n] = strdup(e->d_name))) goto oom;
        n++;
    }
    closedir(d);
    return n;
oom:
    closedir(d);
    for (int i = 0; i < n; i++) free((*names)[i]);
    free(*names);
    *names = NULL;
    return ps_errf(err, PS_ENOMEM, "adapters: out of memory listing '%s'", dir), -1;
}

long long adapter_store_mtime(const char *dir, const char *name) {
    char path[ADAPTER_STORE_PATH_MAX];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0 ? (long long)st.st_mtime : 0;
}

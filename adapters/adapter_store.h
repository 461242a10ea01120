/* Internal to adapters/: the on-disk side of the registry. Each adapter is a
 * folder <dir>/<name>/ holding exactly the two PEFT files as uploaded, so the
 * folder is itself a valid PEFT adapter. Writes go to <dir>/.tmp-<name>-<n>/
 * and are renamed into place; deletions rename to <dir>/.trash-<name>-<n>/
 * first, so a crash leaves either the old or the new folder, never a mix.
 * Not thread-safe by itself: the registry serialises commits and removals. */
#ifndef PS_ADAPTERS_ADAPTER_STORE_H
#define PS_ADAPTERS_ADAPTER_STORE_H

#include <stdbool.h>
#include <stddef.h>

#include "base/status.h"

#define ADAPTER_STORE_PATH_MAX 4096

/* mkdir -p dir; removes .tmp-* and .trash-* leftovers. */
ps_status adapter_store_prepare(const char *dir, ps_err *err);
/* Writes the two files into a new temporary folder; its path goes to tmp. */
ps_status adapter_store_write(const char *dir, const char *name, const char *config, size_t config_len,
                              const void *st, size_t st_len, char *tmp, size_t cap, ps_err *err);
/* Renames tmp to <dir>/<name>; an existing folder is replaced (it is renamed away first). */
ps_status adapter_store_commit(const char *dir, const char *tmp, const char *name, ps_err *err);
/* Removes <dir>/<name> (renamed away first). */
ps_status adapter_store_remove(const char *dir, const char *name, ps_err *err);
/* Deletes a folder we wrote (our two files, then the folder). */
void adapter_store_discard(const char *path);
/* Names of the subfolders of dir that are valid adapter names; *names and each
 * entry malloc'd. Returns the count or -1 (err set). */
int adapter_store_list(const char *dir, char ***names, ps_err *err);
/* Modification time of <dir>/<name> in unix seconds (0 when unknown). */
long long adapter_store_mtime(const char *dir, const char *name);

#endif

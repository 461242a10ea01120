/* Bearer API-key check (--api-key / PEFTSERVE_API_KEY). */
#ifndef PS_SERVER_AUTH_H
#define PS_SERVER_AUTH_H

#include <stdbool.h>

/* true when key is NULL/"" (auth off) or authorization is "Bearer <key>".
 * *missing: the header is absent or not a Bearer credential. */
bool auth_bearer_ok(const char *authorization, const char *key, bool *missing);

#endif

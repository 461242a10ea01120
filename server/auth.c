/* API-key check for /v1 routes: `Authorization: Bearer <key>` (OpenAI's
 * scheme; the openai clients send it from apiKey). Never logs the key. */
#include "auth.h"

#include <string.h>
#include <strings.h>

/* constant time in the key's length, so timing does not leak a prefix */
bool auth_bearer_ok(const char *authorization, const char *key, bool *missing) {
    *missing = false;
    if (!key || !*key) return true;
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0) {
        *missing = true;
        return false;
    }
    const char *got = authorization + 7;
    while (*got == ' ') got++;
    size_t n = strlen(key), m = strlen(got);
    unsigned diff = (unsigned)(n ^ m);
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)key[i] ^ (unsigned char)(i < m ? got[i] : 0);
    return diff == 0;
}

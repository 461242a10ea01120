/* Stop-string matcher (see stop.h). The window holds at most the longest
 * stop string minus one byte plus the newest piece, so the per-token work is
 * bounded by the stop strings' lengths, not by the text generated so far. */
#define _GNU_SOURCE /* memmem */
#include "stop.h"

#include <stdlib.h>
#include <string.h>

ps_status stop_init(stop_matcher *m, const char *const *stops, int n, ps_err *err) {
    memset(m, 0, sizeof *m);
    if (n == 0) return PS_OK;
    m->stops = calloc((size_t)n, sizeof *m->stops);
    m->lens = calloc((size_t)n, sizeof *m->lens);
    if (!m->stops || !m->lens) goto fail;
    m->n = n;
    size_t max_len = 0;
    for (int i = 0; i < n; i++) {
        m->lens[i] = strlen(stops[i]);
        m->stops[i] = malloc(m->lens[i] + 1);
        if (!m->stops[i]) goto fail;
        memcpy(m->stops[i], stops[i], m->lens[i] + 1);
        if (m->lens[i] > max_len) max_len = m->lens[i];
    }
    m->cap = max_len + 256;
    m->buf = malloc(m->cap);
    if (!m->buf) goto fail;
    return PS_OK;
fail:
    stop_free(m);
    return ps_errf(err, PS_ENOMEM, "stop strings (%d): out of memory", n);
}

void stop_free(stop_matcher *m) {
    for (int i = 0; m->stops && i < m->n; i++) free(m->stops[i]);
    free(m->stops);
    free(m->lens);
    free(m->buf);
    memset(m, 0, sizeof *m);
}

/* Earliest start of any stop string in buf, or -1. */
static long stop_find(const stop_matcher *m) {
    long best = -1;
    for (int i = 0; i < m->n; i++) {
        const char *hit = memmem(m->buf, m->n_buf, m->stops[i], m->lens[i]);
        if (hit && (best < 0 || hit - m->buf < best)) best = hit - m->buf;
    }
    return best;
}

/* Length of the longest suffix of buf that is a proper prefix of a stop. */
static size_t stop_hold_len(const stop_matcher *m) {
    size_t hold = 0;
    for (int i = 0; i < m->n; i++) {
        size_t h = m->lens[i] - 1;
        if (h > m->n_buf) h = m->n_buf;
        for (; h > hold; h--) {
            const char *suf = m->buf + m->n_buf - h;
            if (suf[0] == m->stops[i][0] && memcmp(suf, m->stops[i], h) == 0) break;
        }
        if (h > hold) hold = h;
    }
    /* Defensive: never cut inside a UTF-8 character (continuation bytes are 10xxxxxx). */
    while (hold > 0 && hold < m->n_buf && ((unsigned char)m->buf[m->n_buf - hold] & 0xC0) == 0x80)
        hold++;
    return hold;
}

ps_status stop_feed(stop_matcher *m, const char *text, size_t n, bool final, stop_result *r,
                    ps_err *err) {
    *r = (stop_result){.text = "", .n = 0, .stopped = m->stopped};
    if (m->stopped) return PS_OK;
    if (m->n == 0) { /* nothing to match: pass through without copying */
        *r = (stop_result){.text = text, .n = n, .stopped = false};
        return PS_OK;
    }
    memmove(m->buf, m->buf + m->n_release, m->n_buf - m->n_release);
    m->n_buf -= m->n_release;
    m->n_release = 0;
    if (m->n_buf + n > m->cap) {
        size_t cap = 2 * (m->n_buf + n);
        char *nb = realloc(m->buf, cap);
        if (!nb) return ps_errf(err, PS_ENOMEM, "stop window of %zu bytes: out of memory", cap);
        m->buf = nb;
        m->cap = cap;
    }
    memcpy(m->buf + m->n_buf, text, n);
    m->n_buf += n;

    long at = stop_find(m);
    if (at >= 0) {
        m->stopped = true;
        *r = (stop_result){.text = m->buf, .n = (size_t)at, .stopped = true};
        m->n_release = m->n_buf; /* drop everything */
        return PS_OK;
    }
    m->n_release = final ? m->n_buf : m->n_buf - stop_hold_len(m);
    *r = (stop_result){.text = m->buf, .n = m->n_release, .stopped = false};
    return PS_OK;
}

/* Helpers shared by the tokenizer tests (header-only on purpose: tests/unit
 * globs test_*.c as executables, so a helper .c file would become a test).
 * An independent strict UTF-8 validator (RFC 3629) and id-list printing
 * (whole files: tu_read_file in testutil.h). */
#ifndef PS_TOK_TESTLIB_H
#define PS_TOK_TESTLIB_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* RFC 3629 well-formedness (no overlongs, no surrogates, <= U+10FFFF). */
static inline bool tt_utf8_valid(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
            cp = c & 0x1F;
            min = 0x80;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            cp = c & 0x0F;
            min = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            cp = c & 0x07;
            min = 0x10000;
        } else
            return false;
        if (i + len > n) return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += len;
    }
    return true;
}

static inline uint64_t tt_rand(uint64_t *r) {
    *r ^= *r << 13;
    *r ^= *r >> 7;
    *r ^= *r << 17;
    return *r;
}

/* Up to max_chars random code points (all UTF-8 lengths, no surrogates) into s
 * (room for 4 * max_chars bytes); returns the byte length. */
static inline size_t tt_random_utf8(uint64_t *r, char *s, int max_chars) {
    static const uint32_t lo[4] = {0, 0x80, 0x800, 0x10000}, span[4] = {0x80, 0x780, 0xF800, 0x100000};
    size_t len = 0;
    int nch = (int)(tt_rand(r) % (uint64_t)(max_chars + 1));
    for (int c = 0; c < nch; c++) {
        int k = (int)(tt_rand(r) % 4);
        uint32_t cp = lo[k] + (uint32_t)(tt_rand(r) % span[k]);
        if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0x4E2D;
        if (k == 0) {
            s[len++] = (char)cp;
            continue;
        }
        static const unsigned char lead[4] = {0, 0xC0, 0xE0, 0xF0};
        s[len++] = (char)(lead[k] | cp >> (6 * k));
        for (int j = k - 1; j >= 0; j--) s[len++] = (char)(0x80 | ((cp >> (6 * j)) & 0x3F));
    }
    return len;
}

static inline void tt_print_ids(const char *label, const int32_t *ids, int n) {
    fprintf(stderr, "    %s (%d):", label, n);
    for (int i = 0; i < n && i < 64; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, n > 64 ? " ...\n" : "\n");
}

static inline bool tt_ids_equal(const int32_t *a, int na, const int32_t *b, int nb) {
    return na == nb && (na == 0 || memcmp(a, b, sizeof(int32_t) * (size_t)na) == 0);
}

#endif

/* base64: RFC 4648 section 10 test vectors both ways, round trips of every
 * length 0..300, whitespace and missing padding accepted, bad input refused
 * with the offset; data: URI splitting. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "testutil.h"

static void test_vectors(void) {
    static const char *const v[][2] = {{"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"},
                                       {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"}};
    for (int i = 0; i < 7; i++) {
        char *e = b64_encode(v[i][0], strlen(v[i][0]));
        TU_CHECK(e && strcmp(e, v[i][1]) == 0, "encode '%s' = '%s' want '%s'", v[i][0], e, v[i][1]);
        free(e);
        unsigned char *d;
        size_t n;
        TU_CHECK(b64_decode(v[i][1], strlen(v[i][1]), &d, &n, NULL) == PS_OK && n == strlen(v[i][0]) &&
                     memcmp(d, v[i][0], n) == 0, "decode '%s'", v[i][1]);
        free(d);
    }
}

static void test_round_trip(void) {
    unsigned char buf[300];
    for (int i = 0; i < 300; i++) buf[i] = (unsigned char)(i * 97 + 13);
    for (size_t n = 0; n <= 300; n++) {
        char *e = b64_encode(buf, n);
        unsigned char *d;
        size_t m;
        TU_CHECK(b64_decode(e, strlen(e), &d, &m, NULL) == PS_OK && m == n && memcmp(d, buf, n) == 0,
                 "round trip of %zu bytes", n);
        free(d);
        free(e);
    }
}

static void test_lenient_and_errors(void) {
    unsigned char *d;
    size_t n;
    TU_CHECK(b64_decode("Zm9v\r\nYmFy\n", 11, &d, &n, NULL) == PS_OK && n == 6 && memcmp(d, "foobar", 6) == 0,
             "line-wrapped base64");
    free(d);
    TU_CHECK(b64_decode("Zm9vYg", 6, &d, &n, NULL) == PS_OK && n == 4 && memcmp(d, "foob", 4) == 0,
             "missing padding");
    free(d);
    static const char *const bad[][2] = {{"Zm9v!", "0x21 at offset 4"}, {"Zg==Zg==", "after '='"},
                                         {"Z", "whole bytes"}, {"Zm9=v", "after '='"},
                                         {"Zg===", "whole bytes"}, {"Zm9vY=", "whole bytes"}};
    for (int i = 0; i < 6; i++) {
        ps_err err = {0};
        ps_status st = b64_decode(bad[i][0], strlen(bad[i][0]), &d, &n, &err);
        TU_CHECK(st == PS_EINVAL && strstr(err.msg, bad[i][1]) && d == NULL, "'%s' -> %s '%s'", bad[i][0],
                 ps_status_name(st), err.msg);
    }
}

static void test_data_uri(void) {
    const char *p;
    size_t n;
    char mt[64];
    ps_err err = {0};
    const char *u = "data:image/png;base64,iVBORw0K";
    TU_CHECK(b64_data_uri(u, strlen(u), &p, &n, mt, sizeof mt, &err) == PS_OK && p && n == 8 &&
                 strncmp(p, "iVBORw0K", 8) == 0 && strcmp(mt, "image/png") == 0, "data URI");
    u = "DATA:;charset=x;BASE64,AAAA";
    TU_CHECK(b64_data_uri(u, strlen(u), &p, &n, mt, sizeof mt, &err) == PS_OK && p && n == 4 && mt[0] == 0,
             "data URI without a media type");
    u = "iVBORw0K";
    TU_CHECK(b64_data_uri(u, strlen(u), &p, &n, mt, sizeof mt, &err) == PS_OK && p == NULL, "bare base64");
    u = "data:image/png,rawbytes";
    TU_CHECK(b64_data_uri(u, strlen(u), &p, &n, mt, sizeof mt, &err) == PS_EINVAL, "non-base64 data URI");
    u = "data:image/png;base64";
    TU_CHECK(b64_data_uri(u, strlen(u), &p, &n, mt, sizeof mt, &err) == PS_EINVAL, "data URI without ','");
}

int main(void) {
    test_vectors();
    test_round_trip();
    test_lenient_and_errors();
    test_data_uri();
    return tu_finish("base64");
}

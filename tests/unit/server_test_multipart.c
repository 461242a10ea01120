/* multipart/form-data parsing (server/multipart.c) on hand-built bodies:
 * boundaries quoted and not, parts with and without filenames, binary
 * content holding CR/LF, "--" and NUL bytes, LF-only header lines, preamble
 * and epilogue; and the refusals, each with its error kind: not multipart,
 * no boundary, no delimiter, unclosed part, missing closing delimiter, part
 * without name, too many parts, nested multipart, base64 transfer encoding. */
#include <stdio.h>
#include <string.h>

#include "multipart.h"
#include "testutil.h"

static void test_boundary(void) {
    char b[MULTIPART_BOUNDARY_MAX + 1];
    api_error e = {0};
    TU_CHECK(multipart_boundary("multipart/form-data; boundary=abc123", b, &e) && !strcmp(b, "abc123"), "plain");
    TU_CHECK(multipart_boundary("Multipart/Form-Data;charset=utf-8; boundary=\"a b:c\"", b, &e) && !strcmp(b, "a b:c"),
             "quoted, case-insensitive type");
    TU_CHECK(!multipart_boundary("application/json", b, &e) && e.kind == SRV_ERR_MEDIA_TYPE, "json is not multipart");
    TU_CHECK(!multipart_boundary(NULL, b, &e) && e.kind == SRV_ERR_MEDIA_TYPE, "no content type");
    TU_CHECK(!multipart_boundary("multipart/form-data", b, &e) && e.kind == SRV_ERR_INVALID_REQUEST &&
                 strstr(e.msg, "no boundary"), "missing boundary: %s", e.msg);
    char longb[200] = "multipart/form-data; boundary=";
    memset(longb + strlen(longb), 'x', 80);
    TU_CHECK(!multipart_boundary(longb, b, &e) && strstr(e.msg, "longer than 70"), "long boundary: %s", e.msg);
}

static void test_good(void) {
    static const char bin[] = "\r\n--XX\r\n\0--b\r\n-"; /* almost-delimiters and a NUL in file content */
    char body[1024];
    size_t n = 0;
#define ADD(s, len) (memcpy(body + n, s, len), n += len)
#define ADDS(s) ADD(s, strlen(s))
    ADDS("preamble to ignore\r\n--b\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nmy-adapter");
    ADDS("\r\n--b\r\ncontent-disposition: form-data; name=\"adapter_model.safetensors\"; filename=\"w.st\"\n");
    ADDS("Content-Type: application/octet-stream\r\n\r\n");
    ADD(bin, sizeof bin - 1);
    ADDS("\r\n--b  \r\nContent-Disposition: form-data; name=empty\r\n\r\n\r\n--b--\r\nepilogue");
    multipart_form f;
    api_error e = {0};
    bool ok = multipart_parse(body, n, "b", &f, &e);
    TU_CHECK(ok && f.n == 3, "parse: %s (%d parts)", e.msg, f.n);
    if (!ok) return;
    const multipart_part *p = multipart_find(&f, "name");
    TU_CHECK(p && p->len == 10 && !memcmp(p->data, "my-adapter", 10) && !p->filename[0], "name field");
    p = multipart_find(&f, "adapter_model.safetensors");
    TU_CHECK(p && p->len == sizeof bin - 1 && !memcmp(p->data, bin, sizeof bin - 1) && !strcmp(p->filename, "w.st") &&
                 !strcmp(p->content_type, "application/octet-stream"), "binary file part");
    p = multipart_find(&f, "empty");
    TU_CHECK(p && p->len == 0, "empty unquoted-name part");
    TU_CHECK(!multipart_find(&f, "nope"), "absent field");
    /* body starting with the delimiter (no preamble) */
    const char *b2 = "--q\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--q--";
    TU_CHECK(multipart_parse(b2, strlen(b2), "q", &f, &e) && f.n == 1 && f.parts[0].len == 1, "no preamble: %s", e.msg);
}

typedef struct {
    const char *label, *body, *must;
    srv_err_kind kind;
} bad_body;

static void test_bad(void) {
    static const bad_body cases[] = {
        {"no delimiter", "hello", "no '--b' delimiter", SRV_ERR_INVALID_REQUEST},
        {"unclosed part", "--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\ndata", "not closed", SRV_ERR_INVALID_REQUEST},
        {"no closing delimiter", "--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nd\r\n--b", "without the closing",
         SRV_ERR_INVALID_REQUEST},
        {"no name", "--b\r\nContent-Disposition: form-data\r\n\r\nd\r\n--b--", "without a name", SRV_ERR_INVALID_REQUEST},
        {"empty name", "--b\r\nContent-Disposition: form-data; name=\"\"\r\n\r\nd\r\n--b--", "without a name",
         SRV_ERR_INVALID_REQUEST},
        {"no disposition", "--b\r\nContent-Type: text/plain\r\n\r\nd\r\n--b--", "Content-Disposition",
         SRV_ERR_INVALID_REQUEST},
        {"not form-data", "--b\r\nContent-Disposition: attachment; name=\"x\"\r\n\r\nd\r\n--b--", "not form-data",
         SRV_ERR_INVALID_REQUEST},
        {"headers never end", "--b\r\nContent-Disposition: form-data; name=\"x\"", "never end", SRV_ERR_INVALID_REQUEST},
        {"header without colon", "--b\r\nbogus\r\n\r\nd\r\n--b--", "without ':'", SRV_ERR_INVALID_REQUEST},
        {"nested multipart", "--b\r\nContent-Disposition: form-data; name=\"x\"\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\nd\r\n--b--",
         "nested", SRV_ERR_UNSUPPORTED},
        {"base64", "--b\r\nContent-Disposition: form-data; name=\"x\"\r\nContent-Transfer-Encoding: base64\r\n\r\nZA==\r\n--b--",
         "base64", SRV_ERR_UNSUPPORTED},
        {"garbage after delimiter", "--bX\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nd\r\n--b--",
         "not followed by a line break", SRV_ERR_INVALID_REQUEST},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        multipart_form f;
        api_error e = {0};
        bool ok = multipart_parse(cases[i].body, strlen(cases[i].body), "b", &f, &e);
        TU_CHECK(!ok && e.kind == cases[i].kind && strstr(e.msg, cases[i].must), "%s: ok %d kind %d msg '%s'",
                 cases[i].label, ok, e.kind, e.msg);
    }
    /* more than MULTIPART_MAX_PARTS parts */
    char body[8192];
    size_t n = 0;
    for (int i = 0; i <= MULTIPART_MAX_PARTS; i++)
        n += (size_t)snprintf(body + n, sizeof body - n, "--b\r\nContent-Disposition: form-data; name=\"f%d\"\r\n\r\nv\r\n", i);
    n += (size_t)snprintf(body + n, sizeof body - n, "--b--");
    multipart_form f;
    api_error e = {0};
    TU_CHECK(!multipart_parse(body, n, "b", &f, &e) && strstr(e.msg, "more than 16 parts"), "too many parts: %s", e.msg);
}

int main(void) {
    test_boundary();
    test_good();
    test_bad();
    return tu_finish("multipart");
}

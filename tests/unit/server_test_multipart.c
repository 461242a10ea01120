/* multipart/form-data parser: well-formed forms as curl, browsers and the
 * Node/Python clients write them (quoted or bare boundary, preamble,
 * epilogue, padding, header case, escapes, binary data holding CRLF and
 * boundary-like text), and malformed ones, each with its error. */
#include <stdio.h>
#include <string.h>

#include "multipart.h"
#include "testutil.h"

#define BODY(s) (s), sizeof(s) - 1

static void test_ok(void) {
    static const char body[] =
        "--XyZ\r\nContent-Disposition: form-data; name=\"labels\"\r\n\r\n[\"dog\",\"cat\"]\r\n"
        "--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
        "Content-Type: image/png\r\n\r\n\x89PNG\r\nx--XyZ\r\n-- XyZ\0end\r\n--XyZ--\r\n";
    mp_form f;
    ps_err err = {0};
    TU_CHECK(mp_parse("multipart/form-data; boundary=XyZ", BODY(body), 8, &f, &err) == PS_OK, "%s", err.msg);
    TU_CHECK(f.n == 2, "%d parts", f.n);
    const mp_part *l = mp_find(&f, "labels"), *img = mp_find(&f, "image");
    TU_CHECK(l && l->len == 13 && memcmp(l->data, "[\"dog\",\"cat\"]", 13) == 0 && !l->filename, "labels part");
    static const char want[] = "\x89PNG\r\nx--XyZ\r\n-- XyZ\0end";
    TU_CHECK(img && img->len == sizeof want - 1 && memcmp(img->data, want, sizeof want - 1) == 0,
             "image part data (%zu bytes)", img ? img->len : 0);
    TU_CHECK(img && img->filename && strcmp(img->filename, "a.png") == 0 && img->content_type &&
                 strcmp(img->content_type, "image/png") == 0, "image part headers");
    TU_CHECK(!mp_find(&f, "missing"), "mp_find of an absent name");
    mp_free(&f);

    static const char body2[] =
        "preamble\r\n--quoted boundary \t\r\ncontent-disposition: FORM-DATA; filename=x.jpg; name=image\r\n"
        "\r\n\xff\xd8\xff\r\n--quoted boundary\r\nContent-Disposition: form-data; name=\"a\\\"b\"\r\n\r\n"
        "\r\n--quoted boundary--epilogue\r\n--quoted boundary\r\n";
    TU_CHECK(mp_parse("Multipart/Form-Data; charset=utf-8; boundary=\"quoted boundary\"", BODY(body2), 8,
                      &f, &err) == PS_OK, "%s", err.msg);
    TU_CHECK(f.n == 2 && f.parts[0].len == 3 && strcmp(f.parts[0].name, "image") == 0 &&
                 strcmp(f.parts[0].filename, "x.jpg") == 0 && strcmp(f.parts[1].name, "a\"b") == 0 &&
                 f.parts[1].len == 0,
             "quoted boundary / preamble / escapes / empty part");
    mp_free(&f);
}

static void expect_err(const char *what, const char *ct, const char *body, size_t len, int max,
                       ps_status want, const char *part) {
    mp_form f;
    ps_err err = {0};
    ps_status st = mp_parse(ct, body, len, max, &f, &err);
    TU_CHECK(st == want && strstr(err.msg, part) && f.n == 0 && f.parts == NULL,
             "%s: %s '%s' (want %s '%s')", what, ps_status_name(st), err.msg, ps_status_name(want), part);
    if (st == PS_OK) mp_free(&f);
}

static void test_errors(void) {
    const char *ct = "multipart/form-data; boundary=b";
    expect_err("not multipart", "application/json", BODY("{}"), 8, PS_EINVAL, "not multipart");
    expect_err("no boundary", "multipart/form-data", BODY("--b--"), 8, PS_EFORMAT, "boundary");
    expect_err("boundary too long",
               "multipart/form-data; boundary=0123456789012345678901234567890123456789012345678901234567890123456789x",
               BODY("--b--"), 8, PS_EFORMAT, "boundary");
    expect_err("empty body", ct, BODY(""), 8, PS_EFORMAT, "no boundary");
    expect_err("no closing delimiter", ct,
               BODY("--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\ndata"), 8, PS_EFORMAT,
               "no closing boundary");
    expect_err("headers never end", ct, BODY("--b\r\nContent-Disposition: form-data; name=\"x\"\r\n"), 8,
               PS_EFORMAT, "headers never end");
    expect_err("part without a name", ct, BODY("--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--"), 8,
               PS_EFORMAT, "no Content-Disposition");
    expect_err("header without colon", ct, BODY("--b\r\nbogus\r\n\r\nx\r\n--b--"), 8, PS_EFORMAT, "without a name");
    expect_err("not form-data", ct, BODY("--b\r\nContent-Disposition: attachment; name=x\r\n\r\nx\r\n--b--"), 8,
               PS_EFORMAT, "not form-data");
    expect_err("delimiter then garbage", ct, BODY("--bX\r\n"), 8, PS_EFORMAT, "not followed by CRLF");
    expect_err("too many parts", ct,
               BODY("--b\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n"
                    "--b\r\nContent-Disposition: form-data; name=b\r\n\r\n2\r\n--b--"),
               1, PS_EINVAL, "more than 1 parts");
    expect_err("unterminated quote", ct, BODY("--b\r\nContent-Disposition: form-data; name=\"x\r\n\r\n1\r\n--b--"),
               8, PS_EFORMAT, "malformed name");
}

int main(void) {
    test_ok();
    test_errors();
    return tu_finish("multipart");
}

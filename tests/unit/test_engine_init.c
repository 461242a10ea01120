/* engine_init: every bad option fails with a message naming the option and
 * the values (and, under ASan, frees what it had built); the good paths set
 * model id, template and device as documented. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "testutil.h"

static engine_opts demo_opts(void) {
    engine_opts o = engine_opts_default();
    o.device = "cpu";
    o.threads = 1;
    o.max_seqs = 2;
    o.max_batch_tokens = 64;
    o.ctx_len = 256;
    return o;
}

static void expect_fail(engine_opts o, ps_status want, const char *n1, const char *n2, const char *what) {
    engine *e = (engine *)&o; /* must come back NULL */
    ps_err err = {0};
    ps_status st = engine_init(&e, &o, &err);
    TU_CHECK(st == want, "%s: %s, want %s (%s)", what, ps_status_name(st), ps_status_name(want), err.msg);
    TU_CHECK(e == NULL, "%s: engine returned on failure", what);
    TU_CHECK(strstr(err.msg, n1) && (!n2 || strstr(err.msg, n2)), "%s: message '%s' lacks '%s' '%s'",
             what, err.msg, n1, n2 ? n2 : "");
    if (st == PS_OK) engine_free(e);
}

static void test_bad_opts(void) {
    engine_opts o = demo_opts();
    o.quant = "int8";
    expect_fail(o, PS_EINVAL, "int8", "nf4", "quant");
    o = demo_opts();
    o.device = "tpu";
    expect_fail(o, PS_EINVAL, "tpu", "cuda", "device");
    o = demo_opts();
    o.chat_template = "zephyr";
    expect_fail(o, PS_EINVAL, "zephyr", "llama-2,vicuna,alpaca,chatml", "chat template");
    o = demo_opts();
    o.max_seqs = 8;
    o.max_batch_tokens = 4;
    expect_fail(o, PS_EINVAL, "max_batch_tokens 4", "max_seqs 8", "batch tokens");
    o = demo_opts();
    o.max_queue = 0;
    expect_fail(o, PS_EINVAL, "max_queue 0", NULL, "queue");
    o = demo_opts();
    o.ctx_len = 4096;
    expect_fail(o, PS_EINVAL, "4096", "2048", "ctx_len over the model");
    o = demo_opts();
    o.kv_pages = 3;
    expect_fail(o, PS_EINVAL, "kv_pages 3", "16 pages", "kv pages");
    o = demo_opts();
    o.kv_dtype = "fp8";
    expect_fail(o, PS_EINVAL, "fp8", "f32, f16, bf16", "kv dtype");
}

static void test_devices(void) {
    engine_opts o = demo_opts();
    o.device = "cuda"; /* named explicitly: must work or fail, never fall back */
    engine *e = NULL;
    ps_err err = {0};
    ps_status st = engine_init(&e, &o, &err);
    if (st == PS_OK) {
        engine_info in;
        engine_get_info(e, &in);
        TU_CHECK(strcmp(in.device, "cuda") == 0, "cuda asked, got %s", in.device);
        engine_free(e);
    } else {
        TU_CHECK((st == PS_ENOTSUP || st == PS_EDEVICE) && e == NULL && strstr(err.msg, "cuda"),
                 "cuda: %s %s", ps_status_name(st), err.msg);
    }
    o.device = NULL; /* auto: whatever works */
    st = engine_init(&e, &o, &err);
    TU_CHECK(st == PS_OK, "auto device: %s", err.msg);
    if (st == PS_OK) {
        engine_info in;
        engine_get_info(e, &in);
        TU_CHECK(in.demo && (strcmp(in.device, "cpu") == 0 || strcmp(in.device, "cuda") == 0),
                 "auto device %s", in.device);
        engine_free(e);
    }
    o = demo_opts();
    o.model_id = "my-demo";
    o.chat_template = "vicuna";
    st = engine_init(&e, &o, &err);
    TU_CHECK(st == PS_OK, "model_id: %s", err.msg);
    if (st == PS_OK) {
        engine_info in;
        engine_get_info(e, &in);
        TU_CHECK(strcmp(in.model_id, "my-demo") == 0 && strcmp(in.chat_template, "vicuna") == 0,
                 "id %s template %s", in.model_id, in.chat_template);
        engine_free(e);
    }
}

static void test_folders(void) {
    char dir[] = "/tmp/ps_engine_init_XXXXXX";
    TU_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    engine_opts o = demo_opts();
    o.model_dir = dir;
    expect_fail(o, PS_ENOTFOUND, "tokenizer.model not found", dir, "no tokenizer.model");
    o.model_dir = "/nonexistent/model";
    expect_fail(o, PS_ENOTFOUND, "tokenizer.model not found", "/nonexistent/model", "no folder");

    const char *fx = getenv("PEFTSERVE_FIXTURES");
    char tokp[4096], link[4096];
    if (fx && snprintf(tokp, sizeof tokp, "%s/llama-tiny/tokenizer.model", fx) > 0 &&
        access(tokp, R_OK) == 0) {
        /* a tokenizer but no config.json: the model loader's error comes through */
        snprintf(link, sizeof link, "%s/tokenizer.model", dir);
        TU_CHECK(symlink(tokp, link) == 0, "symlink");
        o.model_dir = dir;
        engine *e = (engine *)&o;
        ps_err err = {0};
        ps_status st = engine_init(&e, &o, &err);
        TU_CHECK(st != PS_OK && e == NULL && strstr(err.msg, "config.json"), "no config.json: %s %s",
                 ps_status_name(st), err.msg);
        unlink(link);

        char mdir[4096];
        snprintf(mdir, sizeof mdir, "%s/llama-tiny/", fx); /* trailing slash: id is still the name */
        o.model_dir = mdir;
        o.quant = "none";
        o.chat_template = "llama-2";
        st = engine_init(&e, &o, &err);
        TU_CHECK(st == PS_OK, "llama-tiny: %s", err.msg);
        if (st == PS_OK) {
            engine_info in;
            engine_get_info(e, &in);
            TU_CHECK(strcmp(in.model_id, "llama-tiny") == 0 && strcmp(in.chat_template, "llama-2") == 0,
                     "id %s template %s", in.model_id, in.chat_template);
            engine_free(e);
        }
    } else {
        fprintf(stderr, "note: PEFTSERVE_FIXTURES not set: model folder cases skipped\n");
    }
    rmdir(dir);
}

int main(void) {
    test_bad_opts();
    test_devices();
    test_folders();
    engine *e = NULL;
    ps_err err = {0};
    TU_CHECK(engine_init(&e, NULL, &err) == PS_OK, "NULL opts = defaults (demo): %s", err.msg);
    engine_free(e);
    engine_free(NULL);
    return tu_finish("engine init");
}

/* Chat templates against hand-written strings from the published formats:
 *   llama-2: Meta llama/generation.py chat_completion (B_INST "[INST]",
 *            B_SYS "<<SYS>>\n", E_SYS "\n<</SYS>>\n\n"; each finished exchange
 *            encoded as f"{B_INST} {u} {E_INST} {a} " with BOS and EOS)
 *   vicuna:  FastChat "vicuna_v1.1" (ADD_COLON_TWO, sep " ", sep2 "</s>")
 *   alpaca:  alpaca-lora templates/alpaca.json prompt_no_input
 *   chatml:  OpenAI ChatML "<|im_start|>role\n...<|im_end|>\n"
 * plus role errors and template detection from tokenizer_config.json. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat_template.h"
#include "testutil.h"

#define N(a) ((int)(sizeof a / sizeof a[0]))

static void expect(chat_tmpl t, const engine_chat_msg *m, int n, const char *want, const char *what) {
    char *out = NULL;
    ps_err err = {0};
    ps_status st = chat_template_render(t, m, n, &out, &err);
    TU_CHECK(st == PS_OK, "%s: status %s (%s)", what, ps_status_name(st), err.msg);
    if (st == PS_OK)
        TU_CHECK(strcmp(out, want) == 0, "%s:\n got: [%s]\nwant: [%s]", what, out, want);
    free(out);
}

static void expect_err(chat_tmpl t, const engine_chat_msg *m, int n, const char *needle,
                       const char *what) {
    char *out = NULL;
    ps_err err = {0};
    ps_status st = chat_template_render(t, m, n, &out, &err);
    TU_CHECK(st == PS_EINVAL, "%s: status %s, want einval", what, ps_status_name(st));
    TU_CHECK(strstr(err.msg, needle) != NULL, "%s: message '%s' lacks '%s'", what, err.msg, needle);
    TU_CHECK(out == NULL, "%s: output on error", what);
    free(out);
}

static const engine_chat_msg multi_sys[] = {
    {"system", "You are a helpful assistant."},
    {"user", "Hi!"},
    {"assistant", "Hello! How can I help you today?"},
    {"user", "Tell me a joke."},
};
static const engine_chat_msg multi[] = {
    {"user", "What is 2+2?"},
    {"assistant", "4"},
    {"user", "And 3+3?"},
};
static const engine_chat_msg single[] = {{"user", "Name a color."}};

static void test_llama2(void) {
    expect(CHAT_TMPL_LLAMA2, multi_sys, N(multi_sys),
           "[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHi! [/INST] Hello! How can I "
           "help you today? </s><s>[INST] Tell me a joke. [/INST]",
           "llama-2 with system");
    expect(CHAT_TMPL_LLAMA2, multi, N(multi),
           "[INST] What is 2+2? [/INST] 4 </s><s>[INST] And 3+3? [/INST]", "llama-2 no system");
    expect(CHAT_TMPL_LLAMA2, single, 1, "[INST] Name a color. [/INST]", "llama-2 single");
    /* Meta strips each content (Python str.strip: also \v, \f, U+00A0, U+3000) */
    const engine_chat_msg ws[] = {{"user", " \t\xC2\xA0Hi\n\v "}, {"assistant", "\n ok \xE3\x80\x80"},
                                  {"user", "next"}};
    expect(CHAT_TMPL_LLAMA2, ws, N(ws), "[INST] Hi [/INST] ok </s><s>[INST] next [/INST]",
           "llama-2 strip");
    /* system + whitespace-only user: the combined text is stripped as one string */
    const engine_chat_msg sys_ws[] = {{"system", "S"}, {"user", "  "}};
    expect(CHAT_TMPL_LLAMA2, sys_ws, N(sys_ws), "[INST] <<SYS>>\nS\n<</SYS>> [/INST]",
           "llama-2 system + blank user");
    const engine_chat_msg uu[] = {{"user", "a"}, {"user", "b"}};
    expect_err(CHAT_TMPL_LLAMA2, uu, 2, "alternate", "llama-2 user,user");
    const engine_chat_msg ua[] = {{"user", "a"}, {"assistant", "b"}};
    expect_err(CHAT_TMPL_LLAMA2, ua, 2, "last message must be from the user", "llama-2 ends assistant");
    const engine_chat_msg s_only[] = {{"system", "a"}};
    expect_err(CHAT_TMPL_LLAMA2, s_only, 1, "user message must follow", "llama-2 system only");
    const engine_chat_msg a_first[] = {{"assistant", "a"}, {"user", "b"}};
    expect_err(CHAT_TMPL_LLAMA2, a_first, 2, "expected 'user'", "llama-2 assistant first");
}

static void test_vicuna(void) {
    expect(CHAT_TMPL_VICUNA, multi, N(multi),
           "A chat between a curious user and an artificial intelligence assistant. The assistant "
           "gives helpful, detailed, and polite answers to the user's questions. USER: What is "
           "2+2? ASSISTANT: 4</s>USER: And 3+3? ASSISTANT:",
           "vicuna default system");
    expect(CHAT_TMPL_VICUNA, multi_sys, N(multi_sys),
           "You are a helpful assistant. USER: Hi! ASSISTANT: Hello! How can I help you "
           "today?</s>USER: Tell me a joke. ASSISTANT:",
           "vicuna with system");
}

static void test_alpaca(void) {
    expect(CHAT_TMPL_ALPACA, single, 1,
           "Below is an instruction that describes a task. Write a response that appropriately "
           "completes the request.\n\n### Instruction:\nName a color.\n\n### Response:\n",
           "alpaca single (alpaca-lora prompt_no_input)");
    expect(CHAT_TMPL_ALPACA, multi, N(multi),
           "Below is an instruction that describes a task. Write a response that appropriately "
           "completes the request.\n\n### Instruction:\nWhat is 2+2?\n\n### Response:\n4\n\n"
           "### Instruction:\nAnd 3+3?\n\n### Response:\n",
           "alpaca multi-turn");
    const engine_chat_msg sys[] = {{"system", "Answer briefly."}, {"user", "Why?"}};
    expect(CHAT_TMPL_ALPACA, sys, N(sys),
           "Answer briefly.\n\n### Instruction:\nWhy?\n\n### Response:\n", "alpaca with system");
}

static void test_chatml(void) {
    expect(CHAT_TMPL_CHATML, multi_sys, N(multi_sys),
           "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
           "<|im_start|>user\nHi!<|im_end|>\n"
           "<|im_start|>assistant\nHello! How can I help you today?<|im_end|>\n"
           "<|im_start|>user\nTell me a joke.<|im_end|>\n"
           "<|im_start|>assistant\n",
           "chatml with system");
    expect(CHAT_TMPL_CHATML, single, 1,
           "<|im_start|>user\nName a color.<|im_end|>\n<|im_start|>assistant\n", "chatml single");
}

static void test_errors(void) {
    expect_err(CHAT_TMPL_CHATML, multi, 0, "empty", "no messages");
    const engine_chat_msg bad[] = {{"tool", "x"}};
    expect_err(CHAT_TMPL_VICUNA, bad, 1, "role 'tool'", "unknown role");
    const engine_chat_msg late_sys[] = {{"user", "a"}, {"system", "b"}};
    expect_err(CHAT_TMPL_ALPACA, late_sys, 2, "only allowed as the first", "late system");
    expect_err(CHAT_TMPL_NONE, single, 1, "--chat-template llama-2|vicuna|alpaca|chatml", "none");
    chat_tmpl t;
    ps_err err = {0};
    TU_CHECK(chat_template_by_name("zephyr", &t, &err) == PS_EINVAL, "unknown name accepted");
    TU_CHECK(strstr(err.msg, "zephyr") && strstr(err.msg, "llama-2,vicuna,alpaca,chatml"),
             "unknown name message: %s", err.msg);
    const char *names[] = {"llama-2", "vicuna", "alpaca", "chatml"};
    for (int i = 0; i < 4; i++) {
        TU_CHECK(chat_template_by_name(names[i], &t, NULL) == PS_OK &&
                     strcmp(chat_template_name(t), names[i]) == 0,
                 "name round trip %s", names[i]);
    }
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void test_detect(void) {
    /* excerpts of the Jinja templates these formats ship with */
    TU_CHECK(chat_template_detect("{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}") ==
                 CHAT_TMPL_LLAMA2, "detect llama-2");
    TU_CHECK(chat_template_detect("{{'<|im_start|>' + message['role'] + '\\n' + message['content'] "
                                  "+ '<|im_end|>' + '\\n'}}") == CHAT_TMPL_CHATML,
             "detect chatml");
    TU_CHECK(chat_template_detect("{{ '### Instruction:\\n' + message['content'] }}") ==
                 CHAT_TMPL_ALPACA, "detect alpaca");
    TU_CHECK(chat_template_detect("{{ 'USER: ' + message['content'] + ' ASSISTANT:' }}") ==
                 CHAT_TMPL_VICUNA, "detect vicuna");
    TU_CHECK(chat_template_detect("{{ '<|user|>\\n' + message['content'] }}") == CHAT_TMPL_NONE,
             "an unknown format must not be guessed");

    char dir[] = "/tmp/ps_chat_tmpl_XXXXXX";
    TU_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char path[256];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    chat_tmpl t = CHAT_TMPL_CHATML;
    ps_err err = {0};
    TU_CHECK(chat_template_detect_dir(dir, &t, &err) == PS_OK && t == CHAT_TMPL_NONE,
             "missing file -> none");
    write_file(path, "{\"chat_template\": \"{% for m in messages %}<|im_start|>{{m.role}}{% endfor %}\"}");
    TU_CHECK(chat_template_detect_dir(dir, &t, &err) == PS_OK && t == CHAT_TMPL_CHATML, "chatml file");
    write_file(path, "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"<|im_start|>\"},"
                     " {\"name\": \"default\", \"template\": \"[INST] x [/INST]\"}]}");
    TU_CHECK(chat_template_detect_dir(dir, &t, &err) == PS_OK && t == CHAT_TMPL_LLAMA2,
             "list form: default wins");
    /* HF's tokenizer_config.json spells model_max_length out as a 31-digit integer */
    write_file(path, "{\"model_max_length\": 1000000000000000019884624838656, "
                     "\"chat_template\": \"{{ '[INST] ' }}\"}");
    TU_CHECK(chat_template_detect_dir(dir, &t, &err) == PS_OK && t == CHAT_TMPL_LLAMA2,
             "huge integer: %s", err.msg);
    write_file(path, "{\"add_bos_token\": true}");
    TU_CHECK(chat_template_detect_dir(dir, &t, &err) == PS_OK && t == CHAT_TMPL_NONE, "no key");
    write_file(path, "{\"chat_template\": ");
    TU_CHECK(chat_template_detect_dir(dir, &t, &err) == PS_EFORMAT &&
                 strstr(err.msg, "tokenizer_config.json"),
             "malformed json: %s", err.msg);
    unlink(path);
    rmdir(dir);
}

int main(void) {
    test_llama2();
    test_vicuna();
    test_alpaca();
    test_chatml();
    test_errors();
    test_detect();
    return tu_finish("chat_template");
}

/* Chat templates (see chat_template.h). Each format is one short function
 * written against its published source; the shared part is a tiny string
 * builder and the role checks. Python's str.strip() (Meta's chat_completion)
 * is mirrored with Python's notion of whitespace, ASCII and Unicode. */
#include "chat_template.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CT_NO_TEMPLATE_MSG \
    "model has no chat template; start the server with --chat-template llama-2|vicuna|alpaca|chatml"

static const char *const ct_names[] = {"none", "llama-2", "vicuna", "alpaca", "chatml"};

const char *chat_template_names(void) { return "llama-2,vicuna,alpaca,chatml"; }

const char *chat_template_name(chat_tmpl t) {
    return (unsigned)t < sizeof ct_names / sizeof ct_names[0] ? ct_names[t] : "none";
}

ps_status chat_template_by_name(const char *name, chat_tmpl *out, ps_err *err) {
    for (int t = CHAT_TMPL_LLAMA2; t <= CHAT_TMPL_CHATML; t++) {
        if (name && strcmp(name, ct_names[t]) == 0) {
            *out = (chat_tmpl)t;
            return PS_OK;
        }
    }
    return ps_errf(err, PS_EINVAL, "unknown chat template '%s' (known: %s)", name ? name : "(null)",
                   chat_template_names());
}

chat_tmpl chat_template_detect(const char *j) {
    if (!j) return CHAT_TMPL_NONE;
    if (strstr(j, "<|im_start|>")) return CHAT_TMPL_CHATML;
    if (strstr(j, "[INST]") || strstr(j, "<<SYS>>")) return CHAT_TMPL_LLAMA2;
    if (strstr(j, "### Instruction")) return CHAT_TMPL_ALPACA;
    if (strstr(j, "ASSISTANT:") || strstr(j, "USER:")) return CHAT_TMPL_VICUNA;
    return CHAT_TMPL_NONE;
}

ps_status chat_template_detect_dir(const char *dir, chat_tmpl *out, ps_err *err) {
    *out = CHAT_TMPL_NONE;
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) return PS_OK;
        return ps_errf(err, PS_EIO, "%s: %s", path, strerror(errno));
    }
    json_error_t je;
    /* ints as reals: HF writes model_max_length as 1e30 spelled out in digits */
    json_t *root = json_loadf(f, JSON_DECODE_INT_AS_REAL, &je);
    fclose(f);
    if (!root) return ps_errf(err, PS_EFORMAT, "%s: line %d: %s", path, je.line, je.text);
    json_t *ct = json_object_get(root, "chat_template");
    const char *text = NULL;
    if (json_is_string(ct)) {
        text = json_string_value(ct);
    } else if (json_is_array(ct)) { /* [{name, template}]: "default" wins, else the first */
        size_t i;
        json_t *it;
        json_array_foreach(ct, i, it) {
            const char *name = json_string_value(json_object_get(it, "name"));
            const char *tmpl = json_string_value(json_object_get(it, "template"));
            if (tmpl && (!text || (name && strcmp(name, "default") == 0))) text = tmpl;
        }
    }
    *out = chat_template_detect(text);
    json_decref(root);
    return PS_OK;
}

/* ---- string builder ---- */

typedef struct {
    char *p;
    size_t n, cap;
    bool oom;
} ct_buf;

static void ct_put(ct_buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = 2 * (b->n + n + 1) + 64;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void ct_puts(ct_buf *b, const char *s) { ct_put(b, s, strlen(s)); }

/* Python str.isspace() code points. */
static bool ct_is_space(unsigned cp) {
    return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
           cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
           cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/* Decodes the UTF-8 character at s (n bytes left); returns its length (1 on bad input). */
static int ct_utf8(const unsigned char *s, size_t n, unsigned *cp) {
    int len = s[0] < 0x80 ? 1 : (s[0] >> 5) == 6 ? 2 : (s[0] >> 4) == 14 ? 3 : (s[0] >> 3) == 30 ? 4 : 0;
    if (len == 0 || (size_t)len > n) {
        *cp = 0xFFFD;
        return 1;
    }
    unsigned c = len == 1 ? s[0] : s[0] & (0x7F >> len);
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *cp = 0xFFFD;
            return 1;
        }
        c = (c << 6) | (s[i] & 0x3F);
    }
    *cp = c;
    return len;
}

/* str.strip() applied to the bytes written since `from`. */
static void ct_strip_since(ct_buf *b, size_t from) {
    if (b->oom) return;
    const unsigned char *s = (const unsigned char *)b->p;
    size_t end = b->n;
    while (end > from) {
        size_t st = end - 1;
        while (st > from && (s[st] & 0xC0) == 0x80) st--;
        unsigned cp;
        if (ct_utf8(s + st, end - st, &cp) != (int)(end - st) || !ct_is_space(cp)) break;
        end = st;
    }
    size_t beg = from;
    while (beg < end) {
        unsigned cp;
        int len = ct_utf8(s + beg, end - beg, &cp);
        if (!ct_is_space(cp)) break;
        beg += (size_t)len;
    }
    memmove(b->p + from, b->p + beg, end - beg);
    b->n = from + (end - beg);
    b->p[b->n] = 0;
}

/* ---- message checks ---- */

typedef enum { CT_SYSTEM, CT_USER, CT_ASSISTANT } ct_role;

static ps_status ct_roles(const engine_chat_msg *msgs, int n, bool system_anywhere, ct_role *roles,
                          ps_err *err) {
    if (n <= 0) return ps_errf(err, PS_EINVAL, "messages: empty list (need at least one message)");
    for (int i = 0; i < n; i++) {
        const char *r = msgs[i].role;
        if (r && strcmp(r, "system") == 0)
            roles[i] = CT_SYSTEM;
        else if (r && strcmp(r, "user") == 0)
            roles[i] = CT_USER;
        else if (r && strcmp(r, "assistant") == 0)
            roles[i] = CT_ASSISTANT;
        else
            return ps_errf(err, PS_EINVAL,
                           "messages[%d]: role '%s' is not one of system, user, assistant", i,
                           r ? r : "(null)");
        if (roles[i] == CT_SYSTEM && i > 0 && !system_anywhere)
            return ps_errf(err, PS_EINVAL,
                           "messages[%d]: a system message is only allowed as the first message",
                           i);
    }
    return PS_OK;
}

static const char *ct_text(const engine_chat_msg *m) { return m->content ? m->content : ""; }

/* ---- the formats ---- */

/* Meta llama/generation.py chat_completion: the system prompt is folded into
 * the first user turn; each finished exchange is "<s>[INST] u [/INST] a </s>". */
static ps_status ct_llama2(ct_buf *b, const engine_chat_msg *m, const ct_role *roles, int n,
                           ps_err *err) {
    int first = roles[0] == CT_SYSTEM ? 1 : 0;
    if (first == n)
        return ps_errf(err, PS_EINVAL, "llama-2 template: a user message must follow the system message");
    for (int i = first; i < n; i++) {
        ct_role want = (i - first) % 2 == 0 ? CT_USER : CT_ASSISTANT;
        if (roles[i] != want)
            return ps_errf(err, PS_EINVAL,
                           "llama-2 template: messages[%d] has role '%s', expected '%s' (roles "
                           "must alternate user/assistant after an optional system message)",
                           i, m[i].role, want == CT_USER ? "user" : "assistant");
    }
    if (roles[n - 1] != CT_USER)
        return ps_errf(err, PS_EINVAL, "llama-2 template: the last message must be from the user");
    for (int i = first; i < n; i += 2) {
        if (i > first) ct_puts(b, "<s>");
        ct_puts(b, "[INST] ");
        size_t from = b->n;
        if (i == first && first == 1) {
            ct_puts(b, "<<SYS>>\n");
            ct_puts(b, ct_text(&m[0]));
            ct_puts(b, "\n<</SYS>>\n\n");
        }
        ct_puts(b, ct_text(&m[i]));
        ct_strip_since(b, from);
        ct_puts(b, " [/INST]");
        if (i + 1 < n) {
            ct_puts(b, " ");
            from = b->n;
            ct_puts(b, ct_text(&m[i + 1]));
            ct_strip_since(b, from);
            ct_puts(b, " </s>");
        }
    }
    return PS_OK;
}

/* FastChat conversation.py "vicuna_v1.1", SeparatorStyle.ADD_COLON_TWO. */
static ps_status ct_vicuna(ct_buf *b, const engine_chat_msg *m, const ct_role *roles, int n) {
    int i = 0;
    if (roles[0] == CT_SYSTEM) {
        ct_puts(b, ct_text(&m[0]));
        i = 1;
    } else {
        ct_puts(b, "A chat between a curious user and an artificial intelligence assistant. "
                   "The assistant gives helpful, detailed, and polite answers to the user's "
                   "questions.");
    }
    ct_puts(b, " ");
    for (; i < n; i++) {
        bool user = roles[i] == CT_USER;
        ct_puts(b, user ? "USER" : "ASSISTANT");
        if (*ct_text(&m[i])) { /* FastChat: an empty message renders as "ROLE:" */
            ct_puts(b, ": ");
            ct_puts(b, ct_text(&m[i]));
            ct_puts(b, user ? " " : "</s>");
        } else {
            ct_puts(b, ":");
        }
    }
    ct_puts(b, "ASSISTANT:");
    return PS_OK;
}

/* Stanford Alpaca's prompt_no_input as alpaca-lora ships it (templates/alpaca.json),
 * turns added the way text-generation-webui's "Alpaca" template does. */
static ps_status ct_alpaca(ct_buf *b, const engine_chat_msg *m, const ct_role *roles, int n) {
    int i = 0;
    if (roles[0] == CT_SYSTEM) {
        ct_puts(b, ct_text(&m[0]));
        i = 1;
    } else {
        ct_puts(b, "Below is an instruction that describes a task. "
                   "Write a response that appropriately completes the request.");
    }
    ct_puts(b, "\n\n");
    for (; i < n; i++) {
        ct_puts(b, roles[i] == CT_USER ? "### Instruction:\n" : "### Response:\n");
        ct_puts(b, ct_text(&m[i]));
        ct_puts(b, "\n\n");
    }
    ct_puts(b, "### Response:\n");
    return PS_OK;
}

/* OpenAI ChatML: no default system message. */
static ps_status ct_chatml(ct_buf *b, const engine_chat_msg *m, int n) {
    for (int i = 0; i < n; i++) {
        ct_puts(b, "<|im_start|>");
        ct_puts(b, m[i].role);
        ct_puts(b, "\n");
        ct_puts(b, ct_text(&m[i]));
        ct_puts(b, "<|im_end|>\n");
    }
    ct_puts(b, "<|im_start|>assistant\n");
    return PS_OK;
}

ps_status chat_template_render(chat_tmpl t, const engine_chat_msg *msgs, int n, char **out,
                               ps_err *err) {
    *out = NULL;
    if (t == CHAT_TMPL_NONE) return ps_errf(err, PS_EINVAL, CT_NO_TEMPLATE_MSG);
    if (t < CHAT_TMPL_NONE || t > CHAT_TMPL_CHATML)
        return ps_errf(err, PS_EINVAL, "chat template id %d out of range", (int)t);
    ct_role *roles = n > 0 ? malloc((size_t)n * sizeof *roles) : NULL;
    if (n > 0 && !roles) return ps_errf(err, PS_ENOMEM, "chat template: out of memory");
    ct_buf b = {0};
    ps_status st = ct_roles(msgs, n, t == CHAT_TMPL_CHATML, roles, err);
    if (st) goto fail;
    switch (t) {
    case CHAT_TMPL_LLAMA2: st = ct_llama2(&b, msgs, roles, n, err); break;
    case CHAT_TMPL_VICUNA: st = ct_vicuna(&b, msgs, roles, n); break;
    case CHAT_TMPL_ALPACA: st = ct_alpaca(&b, msgs, roles, n); break;
    default: st = ct_chatml(&b, msgs, n); break;
    }
    if (st) goto fail;
    if (b.oom) {
        st = ps_errf(err, PS_ENOMEM, "chat template '%s': out of memory", chat_template_name(t));
        goto fail;
    }
    free(roles);
    *out = b.p;
    return PS_OK;
fail:
    free(roles);
    free(b.p);
    return st;
}

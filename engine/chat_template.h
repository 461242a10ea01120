/* Built-in chat templates: render a list of chat messages into the prompt
 * text a chat-tuned model was trained on.
 *
 *   llama-2  Meta's llama/generation.py chat_completion (= HF's llama-2
 *            template): "[INST] <<SYS>>\n{sys}\n<</SYS>>\n\n{u1} [/INST] {a1} </s><s>[INST] {u2} [/INST]"
 *   vicuna   FastChat "vicuna_v1.1": "{sys} USER: {u1} ASSISTANT: {a1}</s>USER: {u2} ASSISTANT:"
 *   alpaca   Stanford Alpaca / alpaca-lora single-turn prompt, extended to
 *            several turns as text-generation-webui's "Alpaca" template:
 *            "{sys}\n\n### Instruction:\n{u1}\n\n### Response:\n{a1}\n\n### Instruction:\n{u2}\n\n### Response:\n"
 *   chatml   "<|im_start|>{role}\n{content}<|im_end|>\n" per message, then "<|im_start|>assistant\n"
 *
 * The rendered text never starts with BOS: the caller tokenises it with
 * add_bos. Markers inside it ("</s>", "<s>") are plain text that the engine's
 * tokenize turns into the control ids, as Hugging Face tokenizers do.
 * Does not run Jinja: a model's tokenizer_config.json `chat_template` is only
 * inspected for markers that identify one of the formats above. */
#ifndef PS_ENGINE_CHAT_TEMPLATE_H
#define PS_ENGINE_CHAT_TEMPLATE_H

#include "base/status.h"
#include "engine.h"

typedef enum {
    CHAT_TMPL_NONE = 0,
    CHAT_TMPL_LLAMA2,
    CHAT_TMPL_VICUNA,
    CHAT_TMPL_ALPACA,
    CHAT_TMPL_CHATML,
} chat_tmpl;

/* "llama-2,vicuna,alpaca,chatml" */
const char *chat_template_names(void);
/* Name of a template ("none" for CHAT_TMPL_NONE). */
const char *chat_template_name(chat_tmpl t);
/* Unknown name -> PS_EINVAL naming the known ones. */
ps_status chat_template_by_name(const char *name, chat_tmpl *out, ps_err *err);
/* Identifies a Jinja chat template by its distinctive markers; NONE if none match. */
chat_tmpl chat_template_detect(const char *jinja);
/* Reads <dir>/tokenizer_config.json (absent -> NONE, PS_OK) and detects its
 * `chat_template` (a string, or a list of {name, template} where "default"
 * wins). Malformed JSON -> PS_EFORMAT. */
ps_status chat_template_detect_dir(const char *dir, chat_tmpl *out, ps_err *err);

/* Renders msgs (roles "system" | "user" | "assistant"; a system message only
 * first). *out is malloc'd. Errors: EINVAL (empty list, unknown role, misplaced
 * system message, llama-2's strict user/assistant alternation ending with a
 * user turn, template NONE), ENOMEM. */
ps_status chat_template_render(chat_tmpl t, const engine_chat_msg *msgs, int n, char **out,
                               ps_err *err);

#endif

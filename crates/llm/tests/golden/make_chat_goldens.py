"""Chat-template goldens: transformers' own Jinja rendering (render_jinja_template, the function
behind apply_chat_template) of the chat templates of the model families MMedPO uses as judges.

    ~/.cache/mmedpo-venv/bin/python crates/llm/tests/golden/make_chat_goldens.py

Templates (the `chat_template` strings of the public tokenizer_config.json files):
  llama3:  Meta-Llama-3-8B-Instruct, also Llama3-Med42-8B / 70B.
  mistral: Mistral-7B-Instruct-v0.1 (BioMistral-7B has no template of its own; mistral is used).
  chatml:  a ChatML template with a default system message and loop.last.
Writes chat_goldens.json: for each template and conversation, the rendered text with and without
the generation prompt, or the exception text the template raises.
"""
import json
import os

import transformers
from transformers.utils.chat_template_utils import render_jinja_template

HERE = os.path.dirname(os.path.abspath(__file__))

TEMPLATES = {
    "llama3": {
        "template": "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
        "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
        "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
        "{{ content }}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|eot_id|>",
    },
    "mistral": {
        "template": "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
        "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
        "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
        "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
        "{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant "
        "roles are supported!') }}{% endif %}{% endfor %}",
        "bos_token": "<s>",
        "eos_token": "</s>",
    },
    "chatml": {
        "template": "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful "
        "assistant.<|im_end|>\n' }}{% endif %}\n{% for message in messages %}\n"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'].strip() + '<|im_end|>' }}"
        "{% if not loop.last or add_generation_prompt %}{{ '\n' }}{% endif %}\n{% endfor %}\n"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
        "bos_token": "",
        "eos_token": "<|im_end|>",
    },
}

CONVERSATIONS = {
    "one_user": [{"role": "user", "content": "Question: Is there a fracture?\nScore: 0.7 "}],
    "multi_turn": [
        {"role": "user", "content": "Score the answer."},
        {"role": "assistant", "content": "{\"score\": 0.4}"},
        {"role": "user", "content": "Reply with JSON only: {\"score\": <0..1>}"},
    ],
    "with_system": [
        {"role": "system", "content": "You are a board-certified radiologist."},
        {"role": "user", "content": "  Rate the hallucination. "},
    ],
}


def main():
    out = {"transformers": transformers.__version__, "templates": TEMPLATES, "cases": []}
    for tname, t in TEMPLATES.items():
        for cname, conv in CONVERSATIONS.items():
            for gen in (True, False):
                case = {"template": tname, "conversation": conv, "add_generation_prompt": gen}
                try:
                    rendered, _ = render_jinja_template(
                        conversations=[conv], chat_template=t["template"], add_generation_prompt=gen,
                        bos_token=t["bos_token"], eos_token=t["eos_token"])
                    case["text"] = rendered[0]
                except Exception as e:  # the template's raise_exception
                    case["error"] = str(e)
                out["cases"].append(case)
    with open(os.path.join(HERE, "chat_goldens.json"), "w") as f:
        json.dump(out, f, indent=1)
    print(f"{len(out['cases'])} cases, {sum('error' in c for c in out['cases'])} raise")


if __name__ == "__main__":
    main()

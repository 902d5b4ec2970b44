"""pv.ChatTemplate renders models' Jinja chat templates as transformers does (checked against jinja2
with transformers' settings), plus the ChatML and Llama-3 fallbacks."""

import pytest

import polyvtd as pv

jinja2 = pytest.importorskip("jinja2")
from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: E402

SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Meta's Llama-3-Instruct template (bos_token comes from the caller).
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

# Written over several lines, as many hub templates are: block tags must leave no whitespace behind.
MULTILINE = """{{ bos_token }}
{% for message in messages %}
    {% if message['role'] == 'system' %}
<<SYS>>{{ message['content'].strip() }}<</SYS>>
    {% elif message['role'] == 'user' %}
[INST] {{ message['content'] }} [/INST]
    {% else %}
{{ message['content'] }}{{ eos_token }}
    {% endif %}
    {% if loop.index0 > 2 %}{% break %}{% endif %}
{% endfor %}
{% if add_generation_prompt and messages[-1]['role'].startswith('us') %}ANSWER:{% endif %}"""

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "  Be brief.  "}, {"role": "user", "content": "Hi 🙂"},
     {"role": "assistant", "content": "Hello!\n"}, {"role": "user", "content": "東京は？"},
     {"role": "assistant", "content": "Tokyo."}],
]


def jinja2_render(source, messages, add_generation_prompt, bos_token="<s>", eos_token="</s>"):
    """transformers' own renderer settings."""
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                          bos_token=bos_token, eos_token=eos_token)


def test_smollm2_template_exact():
    out = pv.ChatTemplate(SMOLLM2).render([{"role": "user", "content": "Hi"}])
    assert out == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                   "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("source", [SMOLLM2, LLAMA3, MULTILINE], ids=["smollm2", "llama3", "multiline"])
@pytest.mark.parametrize("messages", CONVERSATIONS, ids=["one-turn", "multi-turn"])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_same_text_as_jinja2(source, messages, add_generation_prompt):
    ours = pv.ChatTemplate(source).render(messages, add_generation_prompt=add_generation_prompt,
                                         bos_token="<s>", eos_token="</s>")
    assert ours == jinja2_render(source, messages, add_generation_prompt)


def test_fallbacks():
    messages = CONVERSATIONS[1]
    assert pv.ChatTemplate.chatml().render(messages) == "".join(
        f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + "<|im_start|>assistant\n"
    llama3 = pv.ChatTemplate.llama3()
    # Always opens with <|begin_of_text|>, with or without a system message (unlike the reference).
    assert llama3.render(messages[1:2]).startswith("<|begin_of_text|><|start_header_id|>user")
    assert llama3.render(messages) == jinja2_render(LLAMA3, messages, True, bos_token="<|begin_of_text|>")


def test_fallback_follows_the_vocabulary():
    byte_tokens = [chr(c) for c in range(33, 127)]
    chatml_vocab = pv.Tokenizer.from_vocab(byte_tokens + ["<|im_start|>"], [])
    llama_vocab = pv.Tokenizer.from_vocab(byte_tokens + ["<|start_header_id|>"], [])
    assert pv.ChatTemplate.for_tokenizer(chatml_vocab).source == pv.ChatTemplate.chatml().source
    assert pv.ChatTemplate.for_tokenizer(llama_vocab).source == pv.ChatTemplate.llama3().source


def test_errors_are_named():
    with pytest.raises(pv.SpecError, match="chat template"):
        pv.ChatTemplate("{% for message in messages %}")
    strict = pv.ChatTemplate("{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation must start with user') }}{% endif %}ok")
    with pytest.raises(pv.InputError, match="must start with user"):
        strict.render([{"role": "assistant", "content": "x"}])
    with pytest.raises(pv.InputError, match=r"messages\[1\] has no 'content'"):
        strict.render([{"role": "user", "content": "x"}, {"role": "user"}])


def test_strftime_now_is_available():
    import datetime
    out = pv.ChatTemplate("{{ strftime_now('%Y') }}").render([])
    assert out == str(datetime.datetime.now(datetime.timezone.utc).year)

"""The Modelfile TuneDeck writes next to a GGUF: its TEMPLATE renders, as Ollama would, the prompt training rendered.

Chat templates of each family we ship (ChatML for SmolLM2 and Qwen2.5 with their default system prompts, Llama 3.1
with its headers and dated system block, tiny-offline's own) are read by ``ollama.probe``; the Go template written
from that is rendered by ``ollama.render_go`` and compared with the Jinja template, conversation by conversation.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.data.chatformat import _compile
from backend.models.tiny import TRAINING_CHAT_TEMPLATE
from backend.serving import ollama
from backend.serving.gguf_export import export_template

TEMPLATES = Path(__file__).parent / "templates"
SPECIAL = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}


def renderer(source: str):
    template = _compile(source)
    return lambda msgs, gen: template.render(
        messages=msgs, add_generation_prompt=gen, tools=None, documents=None, **SPECIAL
    )


def family(name: str) -> str:
    return TRAINING_CHAT_TEMPLATE if name == "tiny" else (TEMPLATES / f"{name}.jinja").read_text()


def modelfile_differences(source: str, conversations=ollama.CONVERSATIONS):
    render = renderer(source)
    fmt = ollama.probe(render)
    mf = ollama.modelfile("model.gguf", fmt, SPECIAL["eos_token"])
    diffs = ollama.parity(
        {
            "training": lambda c: render(c, True),
            "modelfile": lambda c: ollama.render_go(mf.template, c, mf.system),
            # Ollama with a Modelfile whose SYSTEM it does not pass on: the template's own default must hold
            "modelfile without SYSTEM": lambda c: ollama.render_go(mf.template, c, None),
        },
        conversations,
    )
    return mf, diffs


@pytest.mark.parametrize("name", ["smollm2", "qwen2.5", "tiny"])
def test_the_modelfile_renders_every_conversation_as_training_did(name: str) -> None:
    mf, diffs = modelfile_differences(family(name))
    assert diffs == []
    assert mf.text.startswith('FROM ./model.gguf\nTEMPLATE """')


def test_a_template_with_a_default_system_prompt_puts_it_in_system_and_in_the_template() -> None:
    mf, _ = modelfile_differences(family("qwen2.5"))
    assert mf.system == "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    assert 'SYSTEM """You are Qwen, created by Alibaba Cloud. You are a helpful assistant."""' in mf.text
    assert 'PARAMETER stop "<|im_end|>"' in mf.text


def test_llama_3_headers_render_the_same_except_where_its_template_trims_spaces() -> None:
    mf, diffs = modelfile_differences(family("llama-3.1"))
    assert mf.system == ""  # Llama 3.1 writes an empty, dated system block when a chat has none
    assert 'PARAMETER stop "<|eot_id|>"' in mf.text
    # the one conversation with a trailing space: Llama 3.1's template trims it, a Go template passes it on
    trailing = next(i for i, c in enumerate(ollama.CONVERSATIONS) if c[-1]["content"].endswith(" "))
    assert {d.conversation for d in diffs} == {trailing}
    assert diffs[0].expected.replace("Thanks!<|eot_id|>", "") == diffs[0].got.replace(
        "Thanks! <|eot_id|>", ""
    )


def test_the_run_system_prompt_becomes_the_default_of_the_exported_template() -> None:
    source = export_template(TRAINING_CHAT_TEMPLATE, "You are Skylark's support bot.")
    assert (
        "{% generation %}" not in source and "endgeneration" not in source
    )  # TRL's markers are gone: llama.cpp's template engines do not know them
    render = renderer(source)
    fmt = ollama.probe(render)
    assert fmt.default_system == "You are Skylark's support bot."
    plain = renderer(TRAINING_CHAT_TEMPLATE)
    with_system = [
        {"role": "system", "content": "You are Skylark's support bot."},
        {"role": "user", "content": "Hi"},
    ]
    assert render([{"role": "user", "content": "Hi"}], True) == plain(with_system, True)
    # a chat that brings its own system prompt keeps it
    own = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}]
    assert render(own, True) == plain(own, True)
    _, diffs = modelfile_differences(source)
    assert diffs == []


def test_a_template_that_folds_the_system_prompt_into_the_first_user_turn_is_named_not_guessed() -> None:
    llama2 = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{% set sys = m['content'] %}"
        "{% elif m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
        "{% else %} {{ m['content'] }} </s>{% endif %}{% endfor %}"
    )
    with pytest.raises(ollama.TemplateShapeError, match="exactly once"):
        ollama.probe(renderer(llama2))


def test_parity_names_the_conversation_and_the_renderer_that_differ() -> None:
    diffs = ollama.parity(
        {"training": lambda c: "A" + c[-1]["content"], "shouty": lambda c: "A" + c[-1]["content"].upper()},
        [[{"role": "user", "content": "OK"}], [{"role": "user", "content": "hi"}]],
    )
    assert [(d.conversation, d.what, d.expected, d.got) for d in diffs] == [(1, "shouty", "Ahi", "AHI")]


def test_go_template_whitespace_trimming_and_quoted_text_follow_go() -> None:
    messages = [{"role": "user", "content": "x"}]
    # "{{-" trims the literal text before it, never what an action wrote; quoted text keeps its newline
    template = '{{- range .Messages }}\n  {{- if eq .Role "user" }}[{{ .Content }}]\n  {{- "\\n" }}{{ end }}{{ end }}'
    assert ollama.render_go(template, messages) == "[x]\n"
    assert ollama.render_go('{{ "a\\n" }}\n{{- "b" }}', []) == "a\nb"
    assert ollama.render_go('{{ "a\\tb" }} {{ "c" -}}   \n d', []) == "a\tb cd"


@pytest.mark.parametrize("bad", ["{{ .Prompt }}", "{{ if .System }}x{{ end }}", "{{ range .Messages }}x"])
def test_go_templates_outside_the_checked_subset_are_refused(bad: str) -> None:
    with pytest.raises(ollama.TemplateShapeError):
        ollama.render_go(bad, [{"role": "user", "content": "x"}])


def test_text_a_modelfile_cannot_quote_is_refused() -> None:
    fmt = ollama.probe(renderer(family("smollm2")))
    weird = ollama.TurnFormat(fmt.start, fmt.prefix, fmt.suffix, fmt.generation, 'Say """ please')
    with pytest.raises(ollama.TemplateShapeError, match='"""'):
        ollama.modelfile("m.gguf", weird, "</s>")

"""Chat tab: talk to a finished run (base model + its adapter) or to a base model alone, with streaming.

Generation happens in the model server process (``backend.serving.modelserver``); history lives in this browser session.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from backend.core.status import JobStatus
from backend.models.registry import BUILTINS, TINY_DESCRIPTION, TINY_MODEL
from backend.serving.modelclient import ModelServerError
from ui.context import AppContext

BASE_PREFIX = "base: "


def chat_targets(ctx: AppContext) -> list[tuple[str, str]]:
    """(label, value) pairs: runs with an adapter, then each base model they used, then the other models on this
    machine (the starter model, converted .gguf files, cached Hub models, tiny-offline)."""
    from backend.models.registry import on_this_machine

    out: list[tuple[str, str]] = []
    bases: list[str] = []
    for job in ctx.store.list_jobs((JobStatus.SUCCEEDED, JobStatus.CANCELLED)):
        base = job.config.get("base_model", "")
        if (job.result or {}).get("adapter_dir"):
            out.append((f"{job.id}  ({base} + adapter, {job.status.value})", job.id))
        if base and base not in bases:
            bases.append(base)
    for base in bases + [m for m in on_this_machine(ctx.paths) if m not in bases]:
        out.append((f"{BASE_PREFIX}{base} (no fine-tuning)", BASE_PREFIX + base))
    return out


def on_open(current: str | None, seen: str | None, ctx: AppContext) -> tuple[dict, str | None]:
    """Chat opened: fresh choices, and the run just trained selected (see ui.follow). Returns (update, newest)."""
    from ui.follow import follow

    targets = chat_targets(ctx)
    values = [v for _, v in targets]
    newest = next((v for v in values if not v.startswith(BASE_PREFIX)), None)
    return gr.update(choices=targets, value=follow(current, values, newest, seen)), newest


def resolve_target(target: str, ctx: AppContext) -> tuple[str, str | None]:
    """(base model, adapter dir or None) for a dropdown value."""
    if target.startswith(BASE_PREFIX):
        return target[len(BASE_PREFIX) :], None
    job = ctx.store.get_job(target)
    if job is None or not (job.result or {}).get("adapter_dir"):
        raise ModelServerError(f"{target} has no adapter yet: pick a finished run.")
    return job.config["base_model"], job.result["adapter_dir"]


def _text(content: Any) -> str:
    # Gradio 6 gives message content as a list of {"type": "text", "text": ...} parts.
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content or "")


def chat(
    message: str,
    history: list[dict],
    target: str | None,
    system: str,
    temperature: float,
    max_new_tokens: float,
    ctx: AppContext,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    stop: str = "",
) -> Iterator[tuple[list[dict], str]]:
    """Stream the reply into the history. Yields (history, cleared textbox)."""
    history = [{"role": m["role"], "content": _text(m["content"])} for m in (history or [])]
    message, system = message or "", system or ""  # widgets never touched in the browser arrive as None
    if not message.strip():
        yield history, ""
        return
    history.append({"role": "user", "content": message})
    if not target:
        yield history + [{"role": "assistant", "content": "Pick a run or a base model above first."}], ""
        return
    messages = ([{"role": "system", "content": system}] if system.strip() else []) + [
        {"role": m["role"], "content": m["content"]} for m in history
    ]
    reply = {"role": "assistant", "content": "…"}
    yield history + [reply], ""
    try:
        base, adapter = resolve_target(target, ctx)
        stops = [x.strip() for x in (stop or "").split(",") if x.strip()]
        for text in ctx.models.stream(
            base,
            adapter,
            messages,
            max_new_tokens=int(max_new_tokens or 128),
            temperature=float(temperature or 0.0),
            top_p=float(top_p or 1.0),
            repetition_penalty=float(repetition_penalty or 1.0),
            stop=stops,
        ):
            reply["content"] = text
            yield history + [reply], ""
        if reply["content"] == "…":
            reply["content"] = "(the model ended its reply without any text)"
    except ModelServerError as exc:
        reply["content"] = f"⚠️ {exc}"
    yield history + [reply], ""


def regenerate(
    history: list[dict],
    target: str | None,
    system: str,
    temperature: float,
    max_new_tokens: float,
    ctx: AppContext,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    stop: str = "",
):
    """Answer the last user message again (useful with temperature > 0)."""
    history = [{"role": m["role"], "content": _text(m["content"])} for m in (history or [])]
    while history and history[-1]["role"] == "assistant":
        history.pop()
    if not history:
        yield [], ""
        return
    last = history.pop()
    yield from chat(
        last["content"],
        history,
        target,
        system,
        temperature,
        max_new_tokens,
        ctx,
        top_p,
        repetition_penalty,
        stop,
    )


def target_note(target: str | None) -> str:
    if target and TINY_MODEL in target and not target.startswith("run-"):
        return TINY_DESCRIPTION
    if target and target.startswith(BASE_PREFIX) and target[len(BASE_PREFIX) :] in BUILTINS:
        return BUILTINS[target[len(BASE_PREFIX) :]].about
    if target and target.startswith("run-"):
        return "A fine-tuned run: the base model with its LoRA adapter switched on. Greedy unless temperature > 0."
    return ""


def render(ctx: AppContext) -> dict:
    with gr.Row():
        target = gr.Dropdown(
            label="Talk to",
            choices=chat_targets(ctx),
            interactive=True,
            scale=3,
            allow_custom_value=True,
            info="A finished run (base model + its adapter), or a base model alone.",
        )
        refresh = gr.Button("↻ Update list", size="sm", scale=0)
    note = gr.Markdown()
    with gr.Accordion("Settings", open=False):
        system = gr.Textbox(
            label="System prompt",
            placeholder="Optional, e.g. 'You are a concise assistant.'",
            info="Left empty, a run uses the system prompt it was trained with (if it had one), as training did.",
        )
        with gr.Row():
            temperature = gr.Slider(
                0,
                2,
                value=0,
                step=0.05,
                label="Temperature",
                info="0 = always the same answer (greedy); higher = more varied.",
            )
            top_p = gr.Slider(
                0.05,
                1,
                value=1,
                step=0.05,
                label="Top-p",
                info="With temperature > 0: sample only from the most likely tokens adding up to p.",
            )
        with gr.Row():
            max_new = gr.Slider(8, 1024, value=128, step=8, label="Max new tokens")
            repetition = gr.Slider(
                1,
                2,
                value=1,
                step=0.05,
                label="Repetition penalty",
                info="Above 1 discourages repeating the same words.",
            )
            stop = gr.Textbox(
                value="",
                label="Stop at",
                placeholder="e.g. ###, END",
                info="Comma-separated texts that end a reply.",
            )
    chatbot = gr.Chatbot(label="Conversation", height=380, elem_id="chatbot")
    with gr.Row():
        box = gr.Textbox(placeholder="Type a message and press Enter", show_label=False, scale=5)
        send = gr.Button("Send", variant="primary", scale=1)
    with gr.Row():
        stop_btn = gr.Button("Stop", size="sm", variant="stop")
        regen = gr.Button("Regenerate", size="sm")
        clear = gr.Button("Clear conversation", size="sm")

    def fn(m, h, t, s, temp, mx, tp, rp, st):
        yield from chat(m, h, t, s, temp, mx, ctx, tp, rp, st)

    def again(h, t, s, temp, mx, tp, rp, st):
        yield from regenerate(h, t, s, temp, mx, ctx, tp, rp, st)

    settings = [target, system, temperature, max_new, top_p, repetition, stop]
    inputs = [box, chatbot, *settings]
    sent = send.click(fn, inputs, [chatbot, box], api_name="chat")
    submitted = box.submit(fn, inputs, [chatbot, box], api_visibility="private")
    redone = regen.click(again, [chatbot, *settings], [chatbot, box], api_name="regenerate")
    # Cancelling the streaming event closes the generator, which tells the model server to stop generating.
    stop_btn.click(None, None, None, cancels=[sent, submitted, redone], api_visibility="private")
    clear.click(lambda: [], None, chatbot, api_visibility="private")
    target.change(target_note, target, note, api_visibility="private")
    refresh.click(lambda: gr.update(choices=chat_targets(ctx)), None, target, api_name="chat_targets")
    return {"target": target, "chatbot": chatbot}

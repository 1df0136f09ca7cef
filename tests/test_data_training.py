"""Round trip for every shape: a file → import → the rendered example → a few real training steps on tiny-offline.

The example the Data tab shows (``ChatFormat.encode``) must be exactly what TRL's SFTTrainer trains on: the same
token ids, and loss on the same tokens. Chat uses TRL's ``assistant_only_loss`` with a template that marks the
assistant turns; our renderer finds the same turns in the model's plain template.
"""

from __future__ import annotations

import json

import pytest

from backend.data.chatformat import ChatFormat
from backend.data.datasets import import_dataset, load_examples
from backend.data.shapes import to_trl_columns

pytestmark = pytest.mark.slow

MARKED_TEMPLATE = (  # tiny-offline's template with TRL's {% generation %} markers around the assistant's turns
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}<|assistant|>\n{% generation %}{{ message['content'] }}<|end|>\n"
    "{% endgeneration %}{% else %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _files(csv_file) -> dict[str, tuple]:
    chats = [
        {
            "conversations": [
                {"from": "human", "value": f"Hello {i}?"},
                {"from": "gpt", "value": f"Hi {i}!"},
                {"from": "human", "value": "Bye?"},
                {"from": "gpt", "value": f"Bye {i}."},
            ]
        }
        for i in range(12)
    ]
    return {
        "prompt_response": (
            csv_file(
                "Frage;Antwort\n" + "".join(f"What is {i} plus {i}?;It is {2 * i}.\n" for i in range(12)),
                "qa.csv",
            ),
            {"shape": "prompt_response", "prompt_col": "Frage", "response_col": "Antwort"},
        ),
        "chat": (csv_file("".join(json.dumps(c) + "\n" for c in chats), "chats.jsonl"), {}),
        "text": (
            csv_file(
                json.dumps(
                    [{"text": f"Story {i}: the quick brown fox jumps over the lazy dog."} for i in range(12)]
                ),
                "stories.json",
            ),
            {},
        ),
    }


@pytest.mark.parametrize("shape", ["prompt_response", "chat", "text"])
def test_import_render_and_train_each_shape(shape, store, paths, csv_file, tiny_model, tmp_path):
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    file, kwargs = _files(csv_file)[shape]
    record, report = import_dataset(store, paths, file, **kwargs)
    assert record.info["shape"] == shape and report.rows_kept == 12
    frame = load_examples(record, split="train")
    shown = ChatFormat.load("tiny-offline", paths).encode(shape, frame.iloc[0].to_dict())
    assert any(shown.trained) and (shape == "text" or not all(shown.trained))

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    if shape == "chat":
        tokenizer.chat_template = MARKED_TEMPLATE
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32)
    args = SFTConfig(
        output_dir=str(tmp_path / "out"),
        max_steps=6,
        per_device_train_batch_size=4,
        learning_rate=5e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        fp16=False,
        activation_checkpointing=False,
        max_length=256,
        packing=False,
        assistant_only_loss=shape == "chat",
        dataset_num_proc=None,
        seed=0,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        processing_class=tokenizer,
        train_dataset=Dataset.from_dict(to_trl_columns(frame, shape)),
        peft_config=LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"),
    )
    first = trainer.train_dataset[0]
    assert first["input_ids"] == shown.ids  # the same tokens ...
    trl_trained = (
        [x != -100 for x in first["labels"]]
        if "labels" in first
        else (
            [bool(m) for m in first["completion_mask"]]
            if "completion_mask" in first
            else [bool(m) for m in first["assistant_masks"]]
            if "assistant_masks" in first
            else [True] * len(shown.ids)
        )
    )
    assert trl_trained == shown.trained  # ... and the loss on the same ones
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 6 and all(loss == loss for loss in losses)  # finite
    assert losses[-1] < losses[0]

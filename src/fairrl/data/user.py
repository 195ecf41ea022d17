"""The user's own prompts, in TRL's dataset conventions, from a local file or a hub dataset.

A row holds a ``prompt`` column in one of TRL's two formats:

- *standard*: a string, which becomes one user message (after ``system_prompt`` as a system message,
  when one is given);
- *conversational*: a list of ``{"role", "content"}`` messages (roles system / user / assistant / tool),
  used as it is; ``system_prompt`` is put first only when the conversation has no system message of
  its own. It must not end with an assistant message, which is what the policy is to write.

A file without a ``prompt`` column may hold TRL's conversational language-modelling rows instead, a
``messages`` list ending with the assistant's reply: the reply becomes the ``completion`` column (the
target of ``method: sft``) and the messages before it the prompt.

Every other column (``completion``, a reference answer, ...) is kept unchanged in ``Example.columns``:
reward functions receive the columns as keyword lists (TRL's ``fn(prompts, completions, **columns)``;
``completion`` is left out, as TRL does). A string prompt is also kept as ``Example.prompt_text``, so
reward functions get it, and the completion, as strings, as TRL gives standard-format data.
``group`` comes from the group column (as text), or is the source's name when the data has no such
column; ``prompt_id`` is ``<name>:<id>`` when rows carry an ``id`` column, else ``<name>:<row index>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fairrl.data.hub import load_hub_rows, read_records, resolve_source, split_hub_id
from fairrl.data.records import Example, Message
from fairrl.errors import DataError

ROLES = ("system", "user", "assistant", "tool")
_FORMATS = ".jsonl, .json or .csv"


def _rows(source: str, split: str, require_local: bool) -> tuple[list[tuple[str, dict[str, Any]]], str]:
    """(where, row) pairs and a name of the source for messages."""
    resolved = resolve_source(
        source, what="user data", expected=f"an existing {_FORMATS} file", hub_example="trl-lib/tldr"
    )
    if isinstance(resolved, Path):
        return read_records(resolved, what="user data"), str(resolved)
    if require_local:
        raise DataError(
            f"data source {source!r} is not a local file, but a `jsonl` source needs a local {_FORMATS} "
            "file; for a hub id use kind `hub`"
        )
    hub_id, config = split_hub_id(resolved)
    rows = load_hub_rows(
        hub_id, what="user data", config=config, split=split, instead=f"pass a local {_FORMATS} file"
    )
    where = f"hub dataset {source!r} ({split})"
    if not rows:
        raise DataError(f"{where} holds no rows; pick a split with data (split: ...)")
    return [(f"{where} row {n}", row) for n, row in enumerate(rows)], where


def _conversation(messages: list[Any], column: str, at: str) -> list[Message]:
    """A checked copy of conversational prompt messages."""
    if not messages:
        raise DataError(f"{at}: {column!r} is an empty message list; give at least one user message")
    for k, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DataError(
                f"{at}: {column!r} message {k} is not a {{'role', 'content'}} object (got {m!r:.80})"
            )
        if not isinstance(m["role"], str) or m["role"] not in ROLES:
            raise DataError(
                f"{at}: {column!r} message {k} has role {m['role']!r}; use one of {', '.join(ROLES)}"
            )
        if not isinstance(m["content"], str):
            raise DataError(
                f"{at}: {column!r} message {k} has content of type {type(m['content']).__name__}; "
                "contents must be text"
            )
    if messages[-1]["role"] == "assistant":
        raise DataError(
            f"{at}: {column!r} ends with an assistant message, but the prompt must end before the reply "
            "the model is to write; move that message to the 'completion' column or drop it"
        )
    return [dict(m) for m in messages]


def _prompt(value: Any, column: str, system_prompt: str | None, at: str) -> list[Message]:
    """The row's prompt as chat messages (module docstring: standard or conversational format)."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f"{at}: {column!r} is empty; give every row a prompt, or drop the row")
        return [*system, {"role": "user", "content": value}]
    if isinstance(value, list):
        messages = _conversation(value, column, at)
        has_system = any(m["role"] == "system" for m in messages)
        return messages if has_system else [*system, *messages]
    raise DataError(
        f"{at}: {column!r} is a {type(value).__name__}; a prompt is a string or a list of "
        "{'role', 'content'} messages"
    )


def _split_messages(row: dict[str, Any], at: str) -> dict[str, Any]:
    """A row in TRL's conversational language-modelling form (``messages`` ending with the assistant's
    reply) as prompt-completion: ``prompt`` = the messages before the last one, ``completion`` = that
    last assistant message (a list, TRL's conversational completion). Other rows are returned as they are."""
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return row
    if messages[-1].get("role") != "assistant" or len(messages) < 2:
        raise DataError(f"{at}: 'messages' must end with the assistant's reply after at least one prompt "
                        "message, or give 'prompt' (and 'completion') columns instead")  # fmt: skip
    out = {k: v for k, v in row.items() if k != "messages"}
    return {**out, "prompt": messages[:-1], "completion": [messages[-1]]}


def _groups(
    rows: list[tuple[str, dict[str, Any]]], group_column: str | None, name: str
) -> list[str]:
    """Each row's group: its ``group_column`` value as text, or ``name`` when the data has no such column."""
    if group_column is None or not any(group_column in row for _, row in rows):
        return [name] * len(rows)
    groups = []
    for at, row in rows:
        if group_column not in row:
            raise DataError(
                f"{at} has no {group_column!r} column, which other rows have; give every row a group, or "
                "set group_column: null to put all rows in one group"
            )
        value = row[group_column]
        if value is None or not str(value).strip():
            raise DataError(f"{at}: group column {group_column!r} is empty; fill it or drop the row")
        groups.append(str(value))
    return groups


def _prompt_ids(rows: list[tuple[str, dict[str, Any]]], name: str) -> list[str]:
    """``<name>:<id>`` for rows with an ``id`` column, else ``<name>:<row index>``; duplicates refused."""
    ids: dict[str, str] = {}
    for i, (at, row) in enumerate(rows):
        prompt_id = f"{name}:{row['id'] if 'id' in row else i}"
        if prompt_id in ids:
            raise DataError(
                f"{at} has prompt id {prompt_id!r}, as does {ids[prompt_id]}; ids (the 'id' column, or the "
                "row index where it is absent) must be unique"
            )
        ids[prompt_id] = at
    return list(ids)


def user_examples(
    source: str,
    *,
    name: str,
    split: str = "train",
    prompt_column: str = "prompt",
    group_column: str | None = "group",
    system_prompt: str | None = None,
    require_local: bool = False,
) -> list[Example]:
    """Examples from the user's data, one per row, in source order (module docstring for the formats).

    ``source``: a local ``.jsonl`` / ``.json`` / ``.csv`` file, or a hub id ``owner/name`` (optionally
    ``owner/name:config``) read with ``split``. ``name`` names the source: it is ``Example.source``,
    the prefix of every ``prompt_id`` and the group of rows without a group column.
    ``require_local``: refuse hub ids (a source of kind ``jsonl``).
    """
    rows, where = _rows(source, split, require_local)
    if prompt_column == "prompt" and not any("prompt" in row for _, row in rows):
        rows = [(at, _split_messages(row, at)) for at, row in rows]  # TRL's `messages` form, if that is it
    if not any(prompt_column in row for _, row in rows):
        present = list(dict.fromkeys(k for _, row in rows for k in row))
        raise DataError(
            f"{where} has no {prompt_column!r} column; its columns are {present}; set prompt_column to the "
            "column that holds the prompts"
        )
    groups = _groups(rows, group_column, name)
    prompt_ids = _prompt_ids(rows, name)
    examples = []
    for (at, row), group, prompt_id in zip(rows, groups, prompt_ids, strict=True):
        if prompt_column not in row:
            raise DataError(f"{at} has no {prompt_column!r} column; give every row a prompt")
        prompt = _prompt(row[prompt_column], prompt_column, system_prompt, at)
        columns = {k: v for k, v in row.items() if k != prompt_column}
        text = row[prompt_column] if isinstance(row[prompt_column], str) else None
        examples.append(
            Example(prompt_id=prompt_id, prompt=prompt, group=group, source=name, columns=columns, prompt_text=text)
        )
    return examples

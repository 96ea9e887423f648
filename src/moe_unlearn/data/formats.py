"""Row transforms for public benchmark formats whose rows are not yet one of our record kinds.

A data source names one with `transform:`; it runs on each raw row (after `data.select`,
before field mapping and schema validation) and returns the row in our field names:

- mc_to_qa:    an MC row {question, choices, answer: index} -> a QA row whose answer is the
               correct choice (WMDP / MMLU questions as QA: answer NLL, routing stability, replay).
- rwku_probe:  an RWKU probe {query, answer, level, type} -> a QA row whose question is RWKU's
               own instruction for that level (fill-in-the-blank for level 1, short answer else).

Field renames alone (TOFU, MUSE) need no transform: use `fields:`.
"""

from __future__ import annotations

from typing import Any, Callable

from moe_unlearn.registry import Registry

Transform = Callable[[dict[str, Any]], dict[str, Any]]
TRANSFORMS: Registry[Transform] = Registry("data transform")


@TRANSFORMS.register("mc_to_qa")
def mc_to_qa(row: dict[str, Any]) -> dict[str, Any]:
    """{question, choices, answer: index} -> {question, answer: the correct choice, choices, answer_index}."""
    choices, index = row.get("choices"), row.get("answer")
    if not isinstance(choices, (list, tuple)) or isinstance(index, bool) or not isinstance(index, int):
        raise ValueError("needs 'choices' (a list) and 'answer' (an integer index) for mc_to_qa")
    if not 0 <= index < len(choices):
        raise ValueError(f"answer index {index} is out of range for {len(choices)} choices")
    return {**{k: v for k, v in row.items() if k != "answer"}, "answer": str(choices[index]), "answer_index": index}


# RWKU's evaluation prompts (jinzhuoran/RWKU, eval_forget.py): level 1 = fill in the blank,
# levels 2 and 3 = short answer; the in-context-learning attack carries its own "Question:" lines.
RWKU_FILL = "Please complete the blank in the following question.\nQuestion: {query}\nAnswer:"
RWKU_ANSWER = "Please briefly answer the following question.\nQuestion: {query}\nAnswer:"
RWKU_ICL = "Please briefly answer the following question.\n{query}\nAnswer:"


@TRANSFORMS.register("rwku_probe")
def rwku_probe(row: dict[str, Any]) -> dict[str, Any]:
    """{query, answer, level, type} -> {question: RWKU's prompt for the level, answer, ...}."""
    query = row.get("query")
    if not isinstance(query, str):
        raise ValueError("needs a string 'query' for rwku_probe")
    level, kind = str(row.get("level", "")), str(row.get("type", ""))
    if level == "1":
        template = RWKU_FILL
    elif kind == "incontext learning":
        template = RWKU_ICL
    else:
        template = RWKU_ANSWER
    return {**row, "question": template.format(query=query)}


def select_rows(rows: list[tuple[str, Any]], select: dict[str, list[str]] | None) -> list[tuple[str, Any]]:
    """The rows whose value of every selected field that the source has is one of the listed values.

    A source none of whose rows has a selected field is not filtered, so one `data.select`
    (e.g. RWKU's `subject`) narrows every source that carries the field.
    """
    if not select:
        return rows
    fields = [f for f in select if any(isinstance(r, dict) and f in r for _, r in rows)]
    wanted = {f: {str(v) for v in select[f]} for f in fields}
    return [(loc, r) for loc, r in rows if not isinstance(r, dict) or all(str(r.get(f)) in wanted[f] for f in fields)]

"""Prompts for triplet extraction.

The extraction prompt follows the seed card's recipe: one instruction naming the ontology, the entity types,
the weight rubric and the output shape, followed by the passage. The model answers with a JSON array only.
The exact text given to the model (instruction + passage) is stored with every prediction, because the
Hungarian metric's grounding axis checks predicted entities against it.
"""

from __future__ import annotations

from typing import Any

from .ontology import ENTITY_TYPES, RELATIONS, schema_for_prompt

EXTRACTION_INSTRUCTION = (
    "Extract knowledge-graph triplets from the passage below.\n"
    "Use only these relation types: {relations}.\n"
    "Entity types: {entity_types} ('entity' for named things such as people, organisations, places, products,"
    " models and data sets; 'concept' for abstract ideas, methods and fields).\n"
    "Write entity titles in their canonical form, without company suffixes such as Inc. or Ltd.\n"
    "Give each relation a weight in [0, 1]: 0.8-1.0 when the passage states it, 0.5-0.8 when it is implied,"
    " 0.1-0.4 when it is only inferred.\n"
    "Answer with a JSON array only, no prose, in this shape:\n{example}\n"
    "If the passage contains no such relation, answer [].\n\n"
    "Passage:\n{text}"
)


def extraction_prompt(text: str) -> str:
    """The full user prompt (instruction + passage) for one passage."""
    return EXTRACTION_INSTRUCTION.format(
        relations=", ".join(RELATIONS),
        entity_types=", ".join(ENTITY_TYPES),
        example=schema_for_prompt(),
        text=text.strip(),
    )


def extraction_messages(text: str, system: str | None = None) -> list[dict[str, Any]]:
    """Chat messages for one passage: an optional system turn and the user prompt."""
    msgs: list[dict[str, Any]] = []
    if system:
        msgs.append({"role": "system", "content": system})
    msgs.append({"role": "user", "content": extraction_prompt(text)})
    return msgs


# ------------------------------------------------------------------------------ relation classification (04)

RC_SYSTEM = ("You classify the relation between two entities in a sentence. Entity 1 is the subject and "
             "entity 2 the object. Answer with the relation label only.")
RC_SCHEMA_SYSTEM = RC_SYSTEM + " Allowed labels: {labels}."


def rc_user(text: str, e1: str, e2: str) -> str:
    """The user turn of one relation-classification query (and of each demonstration)."""
    return f"Sentence: {text.strip()}\nEntity 1: {e1}\nEntity 2: {e2}"


def rc_messages(row: dict[str, Any], demos: list[dict[str, Any]] = (), labels: list[str] | None = None,
                text: str | None = None) -> list[dict[str, Any]]:
    """Chat messages for one example: the system turn (listing ``labels`` in the schema-enumerated variant), each
    demonstration as a user turn with its label as the assistant's answer, then the query. ``text`` replaces the
    row's sentence (a shortened one). Training and inference build their prompts with this one function."""
    system = RC_SCHEMA_SYSTEM.format(labels=", ".join(labels)) if labels else RC_SYSTEM
    msgs: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for d in demos:
        msgs.append({"role": "user", "content": rc_user(d["text"], d["e1"], d["e2"])})
        msgs.append({"role": "assistant", "content": d["relation"]})
    msgs.append({"role": "user", "content": rc_user(text if text is not None else row["text"], row["e1"], row["e2"])})
    return msgs

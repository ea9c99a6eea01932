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


# ----------------------------------------------------------------------------------- SPO triples (05, Gemma)

SPO_SYSTEM = ("You are a careful information-extraction assistant. You read a passage and write down the facts it "
              "states as subject-predicate-object triples in JSON, and nothing else.")
# The card's user prompt ("Extract up to N factual (subject, predicate, object) triples...", with a title) in this
# repository's wording; index 0 is the fixed prompt used at evaluation time.
SPO_INSTRUCTIONS: tuple[str, ...] = (
    "Extract up to {n} factual (subject, predicate, object) triples from the passage titled \"{title}\". Use the "
    "passage's own names, short verb phrases as predicates, and qualifiers (date, location, role, score, unit, "
    "quantity) only when the passage gives them.",
    "List at most {n} facts from the passage about \"{title}\" as (subject, predicate, object) triples, adding "
    "qualifiers such as a date or a quantity where the text states one.",
    "Read the passage titled \"{title}\" and return up to {n} subject-predicate-object triples that it states "
    "explicitly; attach dates, places, roles or amounts as qualifiers when they are given.",
    "From the text below (\"{title}\"), pull out no more than {n} factual triples. Each triple names a subject, a "
    "predicate and an object; put any date, location, role, score, unit or quantity in its qualifiers.",
    "Turn the passage \"{title}\" into at most {n} knowledge-graph facts written as (subject, predicate, object) "
    "triples, with qualifiers for details like years or measurements.",
    "Identify up to {n} (subject, predicate, object) facts in the following passage, titled \"{title}\". Leave "
    "qualifiers empty unless the passage states a date, location, role, score, unit or quantity for the fact.",
)
SPO_FORMAT = ('Answer with one JSON object only: {"triples":[{"subject":"...","predicate":"...","object":"...",'
              '"qualifiers":{}}]}. If the passage states no such fact, answer {"triples":[]}.')


def spo_user(text: str, title: str, n: int, variant: int = 0) -> str:
    """The user turn for one passage: instruction ``variant`` of :data:`SPO_INSTRUCTIONS`, the answer format, the
    title and the passage."""
    if not 0 <= variant < len(SPO_INSTRUCTIONS):
        raise ValueError(f"variant must be in [0, {len(SPO_INSTRUCTIONS)}), got {variant}")
    if n < 1:
        raise ValueError(f"n (the most triples asked for) must be >= 1, got {n}")
    instruction = SPO_INSTRUCTIONS[variant].format(n=n, title=(title or "untitled").strip())
    return f"{instruction}\n{SPO_FORMAT}\n\nTitle: {(title or 'untitled').strip()}\nPassage:\n{text.strip()}"


def spo_messages(text: str, title: str, n: int, variant: int = 0, system: str | None = SPO_SYSTEM
                 ) -> list[dict[str, Any]]:
    """Chat messages for one passage in the Gemma recipe's format (system turn, then the user turn)."""
    msgs: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    msgs.append({"role": "user", "content": spo_user(text, title, n, variant)})
    return msgs


def spo_records(rows: list[dict[str, Any]], n: int, *, vary: bool = True, seed: int = 42,
                system: str | None = SPO_SYSTEM) -> list[dict[str, Any]]:
    """Prompt–completion chat records for SFT on SPO answers (rows with ``text``, ``title`` and ``spo``, the gold
    document of :func:`kgutils.formats.spo_document`).

    With ``vary`` each record's instruction is drawn (seeded) from :data:`SPO_INSTRUCTIONS`, as the card's
    training varied its wording; otherwise every record uses the evaluation prompt (variant 0).
    """
    import json
    import random

    rng = random.Random(seed)
    out = []
    for r in rows:
        variant = rng.randrange(len(SPO_INSTRUCTIONS)) if vary else 0
        answer = json.dumps(r["spo"], ensure_ascii=False, separators=(",", ":"))
        out.append({"prompt": spo_messages(r["text"], r.get("title", ""), n, variant, system),
                    "completion": [{"role": "assistant", "content": answer}]})
    return out

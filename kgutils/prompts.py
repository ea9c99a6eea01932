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


# ------------------------------------------------------------------------------- prompt ablations (07)

PROMPT_STYLES: tuple[str, ...] = ("nl", "code")
NO_EVIDENCE = "(no single sentence names both)"

CODE_PREAMBLE = '''from dataclasses import dataclass
from typing import Literal

Relation = Literal[{relations}]
EntityType = Literal[{entity_types}]  # entity: named things; concept: abstract ideas, methods, fields


@dataclass
class Entity:
    title: str  # canonical form, without company suffixes
    type: EntityType


@dataclass
class Triplet:
    source: Entity
    relation: Relation
    target: Entity
    weight: float  # 0.8-1.0 stated in the text, 0.5-0.8 implied, 0.1-0.4 inferred
'''
CODE_INSTRUCTION = "# The triplets that `text` states, as a list of Triplet instances ([] if none)."
CODE_RATIONALE = "# Before each Triplet, a comment quotes the sentence of `text` that supports it."
NL_RATIONALE = ("First list the evidence: one line per triplet, '- source | relation | target: ' followed by the "
                "sentence of the passage that supports it. Then write 'Answer:' and the JSON array.")


def evidence_sentence(text: str, item: dict[str, Any]) -> str | None:
    """The first sentence of ``text`` that names both endpoints of a graph item (case-insensitive): the rationale
    the data itself gives for the triplet (the same rule as :func:`kgutils.formats.spo_qualifiers`)."""
    from .formats import passage_sentences

    try:
        s, t = item["source"]["title"].strip().lower(), item["target"]["title"].strip().lower()
    except (KeyError, TypeError, AttributeError):
        return None
    if not s or not t:
        return None
    return next((x for x in passage_sentences(text) if s in x.lower() and t in x.lower()), None)


def _code_call(item: dict[str, Any]) -> str:
    import json

    src, rel, tgt = item["source"], item["relation"], item["target"]
    return (f"Triplet(Entity({json.dumps(src['title'], ensure_ascii=False)}, {json.dumps(src['type'])}), "
            f"{json.dumps(rel['type'])}, Entity({json.dumps(tgt['title'], ensure_ascii=False)}, "
            f"{json.dumps(tgt['type'])}), {rel['weight']})")


def ablation_answer(items: list[dict[str, Any]], text: str, style: str, rationale: bool) -> str:
    """The gold answer of one passage in a prompt style: the JSON array (``nl``) or a ``triplets = [...]`` list of
    ``Triplet`` instances (``code``); with ``rationale``, each triplet's evidence sentence comes first (an evidence
    list before ``Answer:``, or a comment above each instance)."""
    from .formats import to_json

    if style not in PROMPT_STYLES:
        raise ValueError(f"style must be one of {PROMPT_STYLES}, got {style!r}")
    if style == "nl":
        if not rationale:
            return to_json(items)
        lines = [f"- {it['source']['title']} | {it['relation']['type']} | {it['target']['title']}: "
                 f"{evidence_sentence(text, it) or NO_EVIDENCE}" for it in items]
        return "Evidence:\n" + ("\n".join(lines) if lines else "- none") + "\nAnswer:\n" + to_json(items)
    body = []
    for it in items:
        if rationale:
            body.append(f"    # evidence: {evidence_sentence(text, it) or NO_EVIDENCE}")
        body.append(f"    {_code_call(it)},")
    return "triplets = [\n" + "\n".join(body) + ("\n" if body else "") + "]"


def ablation_user(text: str, style: str, rationale: bool) -> str:
    """The user turn for one passage in a prompt style (see :func:`ablation_messages`)."""
    import json

    if style == "nl":
        return extraction_prompt(text) + (f"\n\n{NL_RATIONALE}" if rationale else "")
    if style == "code":
        preamble = CODE_PREAMBLE.format(relations=", ".join(json.dumps(r) for r in RELATIONS),
                                        entity_types=", ".join(json.dumps(t) for t in ENTITY_TYPES))
        notes = CODE_INSTRUCTION + (f"\n{CODE_RATIONALE}" if rationale else "")
        return f"{preamble}\ntext = {json.dumps(text.strip(), ensure_ascii=False)}\n{notes}"
    raise ValueError(f"style must be one of {PROMPT_STYLES}, got {style!r}")


def ablation_messages(row: dict[str, Any], style: str, rationale: bool,
                      demos: list[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """Chat messages for one cell of the prompt ablation (07): ``style`` (``nl``: the study's instruction;
    ``code``: CodeKGC-style dataclass definitions of the ontology, completed with a list of instances), with or
    without a ``rationale`` before the answer, after ``demos`` (train rows with ``text`` and ``triplets``) as
    user/assistant turns whose answers are written the same way."""
    msgs: list[dict[str, Any]] = []
    for d in demos:
        msgs.append({"role": "user", "content": ablation_user(d["text"], style, rationale)})
        msgs.append({"role": "assistant", "content": ablation_answer(d["triplets"], d["text"], style, rationale)})
    msgs.append({"role": "user", "content": ablation_user(row["text"], style, rationale)})
    return msgs


def parse_ablation_answer(raw: str, style: str) -> tuple[list, str]:
    """An ablation answer back in the graph format, for the one scorer of every cell.

    ``nl``: the text after the last ``Answer:`` (all of it without a rationale) goes through the card's parse
    (:func:`kgutils.metrics.parse_card_output`). ``code``: every ``Triplet(Entity(..), "rel", Entity(..), w)`` call
    is read by :func:`kgutils.formats.code_calls` (literals only, nothing is executed); a call that is not of
    that shape is skipped and makes the status ``bad_items``; no call and no ``[]`` is ``no_code``.

    Returns:
        ``(items, status)``.
    """
    import re

    from .formats import code_calls
    from .metrics import parse_card_output

    if style == "nl":
        text = raw or ""
        if "Answer:" in text:
            text = text.rsplit("Answer:", 1)[1]
        return parse_card_output(text)
    if style != "code":
        raise ValueError(f"style must be one of {PROMPT_STYLES}, got {style!r}")
    calls = code_calls(raw or "")
    items = [item for _, _, item in calls if item is not None]
    bad = len(calls) - len(items)
    if not items and not bad:
        return [], "ok" if re.search(r"triplets\s*=\s*\[\s*\]", raw or "") or (raw or "").strip() == "]" else "no_code"
    return items, "bad_items" if bad else "ok"


def prompt_format(name: str) -> tuple[str, bool]:
    """``(style, rationale)`` of a prompt-format name: ``nl``, ``code``, ``nl+r``, ``code+r`` (``+r``: with a
    rationale before the answer).

    Raises:
        ValueError: for another name (the message lists the valid ones).
    """
    style, _, flag = str(name).partition("+")
    if style not in PROMPT_STYLES or flag not in ("", "r"):
        valid = [s + r for s in PROMPT_STYLES for r in ("", "+r")]
        raise ValueError(f"unknown prompt format {name!r}; choose one of {valid}")
    return style, flag == "r"


def ablation_records(rows: list[dict[str, Any]], style: str, rationale: bool) -> list[dict[str, Any]]:
    """Prompt–completion chat records that fine-tune a model on one prompt format of the ablation: the
    zero-shot prompt of :func:`ablation_messages` and :func:`ablation_answer` as the answer (loss on the answer
    only, as :func:`kgutils.train.sft_records`). ``nl`` without rationale gives exactly 03's training records."""
    return [{"prompt": ablation_messages(r, style, rationale),
             "completion": [{"role": "assistant", "content": ablation_answer(r["triplets"], r["text"], style,
                                                                             rationale)}],
             "chat_template_kwargs": {"enable_thinking": False}} for r in rows]

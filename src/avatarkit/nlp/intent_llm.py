"""Intent classification by a chat model asked for JSON constrained to the allowed intents."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from avatarkit.config import get_logger
from avatarkit.errors import InputValidationError, ProviderError
from avatarkit.nlp.intent import Exclusions, nothing_to_classify, split_clauses, text_of
from avatarkit.nlp.intent_file import OUT_OF_SCOPE, IntentFile, load_intents
from avatarkit.ports import ChatModel, IntentClassifier
from avatarkit.types import ChatMessage, Intent, IntentPrediction, ProcessedText

__all__ = ["LLMIntentClassifier", "intent_schema", "parse_reply"]

_log = get_logger("avatarkit.nlp")
_FENCE_RE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


class _Item(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    confidence: float = Field(ge=0.0, le=1.0)


class _Reply(BaseModel):
    model_config = ConfigDict(extra="ignore")
    intents: list[_Item]


def intent_schema(names: list[str]) -> dict[str, Any]:
    """The JSON schema of the reply the model must give, for the allowed intent ``names``."""
    return {
        "type": "object",
        "properties": {
            "intents": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "enum": [*names, OUT_OF_SCOPE]},
                        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                    },
                    "required": ["name", "confidence"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["intents"],
        "additionalProperties": False,
    }


def parse_reply(reply: str, allowed: set[str]) -> list[Intent]:
    """Read the model's JSON reply (bare, fenced or amid prose) into intents, best first.

    Raises:
        ValueError: no JSON object, a schema violation, or an intent outside ``allowed``.
    """
    fenced = _FENCE_RE.search(reply)
    body = fenced.group(1) if fenced else reply
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("the reply holds no JSON object")
    try:
        data = json.loads(body[start : end + 1])
        parsed = _Reply.model_validate(data)
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ValueError(f"the reply does not match the schema: {exc}") from exc
    unknown = sorted({i.name for i in parsed.intents} - allowed)
    if unknown:
        raise ValueError(f"unknown intents {unknown}; allowed: {sorted(allowed)}")
    if not parsed.intents:
        raise ValueError("the reply lists no intent")
    best: dict[str, float] = {}
    for item in parsed.intents:
        best[item.name] = max(best.get(item.name, 0.0), item.confidence)
    return [
        Intent(name=n, confidence=c)
        for n, c in sorted(best.items(), key=lambda kv: kv[1], reverse=True)
    ]


class LLMIntentClassifier:
    """Asks any :class:`~avatarkit.ports.ChatModel` to classify, with the JSON schema in the prompt.

    The prompt lists each intent's description and a few examples. The reply is parsed and
    validated; an invalid one is sent back once with the error for a corrected answer.

    Args:
        chat: The chat model that classifies.
        intents: Intent file (path, mapping, ``IntentFile``) or ``None`` for the default.
        threshold: Lowest confidence that counts; below it ``top`` is ``out_of_scope``.
        examples_per_intent: Examples shown per intent in the prompt.
        attempts: Tries before giving up on invalid replies (at least 1).
        fallback: Classifier used when every reply was invalid; without one, an error is raised.
    """

    backend = "llm"

    def __init__(
        self,
        chat: ChatModel,
        intents: IntentFile | str | Path | dict[str, Any] | None = None,
        *,
        threshold: float = 0.5,
        examples_per_intent: int = 3,
        attempts: int = 2,
        fallback: IntentClassifier | None = None,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise InputValidationError(
                f"threshold must be in (0, 1), got {threshold}", field="threshold"
            )
        if attempts < 1:
            raise InputValidationError("attempts must be at least 1", field="attempts")
        self.chat = chat
        self.intents = load_intents(intents)
        self.threshold = threshold
        self.attempts = attempts
        self.fallback = fallback
        self.system_prompt = self._system_prompt(examples_per_intent)
        self._exclusions = Exclusions(self.intents)

    def __repr__(self) -> str:
        return f"LLMIntentClassifier(chat={type(self.chat).__name__}, intents={self.names})"

    @property
    def names(self) -> list[str]:
        """The intents this classifier can answer (``out_of_scope`` excluded)."""
        return self.intents.names

    def _system_prompt(self, n_examples: int) -> str:
        lines = [
            "You classify the user's message for an assistant avatar into intents.",
            "Allowed intents:",
        ]
        for spec in self.intents.intents:
            if spec.name == OUT_OF_SCOPE:
                continue
            shown = "; ".join(f'"{e}"' for e in spec.examples[:n_examples])
            lines.append(
                f"- {spec.name}: {spec.description}" + (f" Examples: {shown}" if shown else "")
            )
        lines += [
            f"- {OUT_OF_SCOPE}: none of the above.",
            "List every intent the message expresses (several when it does several things), "
            "best first, each with a confidence between 0 and 1.",
            "Answer with one JSON object only, no prose, matching this JSON schema:",
            json.dumps(intent_schema(self.names), separators=(",", ":")),
        ]
        return "\n".join(lines)

    async def classify(self, text: ProcessedText | str) -> IntentPrediction:
        """Return ranked intents; ``top`` is ``out_of_scope`` below the threshold.

        Raises:
            InputValidationError: ``text`` is neither ProcessedText nor str.
            ProviderError: every reply was invalid and there is no fallback (the chat model's
                own errors pass through unchanged).
        """
        raw = text_of(text).strip()
        if not raw:
            return nothing_to_classify(self.backend)
        messages = [
            ChatMessage(role="system", content=self.system_prompt),
            ChatMessage(role="user", content=raw),
        ]
        allowed = {*self.names, OUT_OF_SCOPE}
        problem = ""
        for attempt in range(1, self.attempts + 1):
            reply = await self.chat.complete(messages)
            try:
                ranked = parse_reply(reply, allowed)
            except ValueError as exc:
                problem = str(exc)
                _log.info("llm intent reply %d/%d invalid: %s", attempt, self.attempts, problem)
                messages = [
                    *messages,
                    ChatMessage(role="assistant", content=reply),
                    ChatMessage(
                        role="user",
                        content=f"That answer was invalid ({problem}). Reply with the JSON "
                        "object only, using only the allowed intent names.",
                    ),
                ]
                continue
            return self._prediction(self._without_excluded(ranked, raw))
        if self.fallback is not None:
            return await self.fallback.classify(
                text
                if isinstance(text, ProcessedText)
                else ProcessedText(original=raw, normalized=raw)
            )
        raise ProviderError(
            f"no valid intent JSON after {self.attempts} attempt(s): {problem}",
            provider="llm-intent",
        )

    def _without_excluded(self, ranked: list[Intent], text: str) -> list[Intent]:
        """``ranked`` with 0 for the intents the file's ``exclude`` patterns rule out of ``text``.

        As the local backends score them: the model's word does not override the file's rule.
        """
        # as the scoring backends read it: a clause the pattern does not match ("My name is
        # Ana. What's your name?") keeps the intent, so it is ruled out only where every
        # clause (or the message as a whole, for one clause) is
        out = self._exclusions.ruled_out(text)
        clauses = split_clauses(text)
        if len(clauses) > 1:
            for clause in clauses:
                out &= self._exclusions.ruled_out(clause)
        if not out:
            return ranked
        kept = [i if i.name not in out else Intent(name=i.name, confidence=0.0) for i in ranked]
        return sorted(kept, key=lambda i: i.confidence, reverse=True)

    def _prediction(self, ranked: list[Intent]) -> IntentPrediction:
        detected = [
            i.name for i in ranked if i.name != OUT_OF_SCOPE and i.confidence >= self.threshold
        ]
        top = detected[0] if detected else OUT_OF_SCOPE
        listed = {i.name for i in ranked}
        rest = [
            Intent(name=n, confidence=0.0) for n in [*self.names, OUT_OF_SCOPE] if n not in listed
        ]
        intents = [*ranked, *rest]
        if top == OUT_OF_SCOPE:
            oos = next((i for i in intents if i.name == OUT_OF_SCOPE), None)
            others = [i for i in intents if i.name != OUT_OF_SCOPE]
            best = others[0].confidence if others else 0.0
            lead = Intent(
                name=OUT_OF_SCOPE, confidence=max(oos.confidence if oos else 0.0, 1.0 - best)
            )
            intents = [lead, *others]
        return IntentPrediction(intents=intents, top=top, detected=detected, backend=self.backend)

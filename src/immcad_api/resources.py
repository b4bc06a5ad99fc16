"""The bundled data the API serves from: source policy, source registry, document rules."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

POLICY_FILE = Path("config/source_policy.yaml")
REGISTRY_FILE = Path("data/sources/canada-immigration/registry.json")
RULES_FILE = Path("data/policy/document_compilation_rules.ca.json")


class ResourceError(Exception):
    """Bundled data is missing or malformed."""


def find_resource_root(explicit: Path | None = None) -> Path:
    """Where config/ and data/ live.

    In the repository they sit two levels above the package (src/immcad_api -> repo root); in the
    synced Worker bundle one level above it (backend-cloudflare/src). Searching both keeps the code
    identical in both places, which is the point of syncing it.
    """
    if explicit is not None:
        candidates = [explicit]
    else:
        here = Path(__file__).resolve().parent
        candidates = [here.parent, here.parent.parent]
    for candidate in candidates:
        if (candidate / POLICY_FILE).is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise ResourceError(f"{POLICY_FILE} not found (looked in {tried}); set IMMCAD_RESOURCE_ROOT")


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9&]+", text.lower()))


@dataclass(frozen=True)
class Resources:
    policy: dict[str, Any]
    registry: dict[str, Any]
    rules: dict[str, Any]

    @classmethod
    def load(cls, root: Path) -> Resources:
        try:
            policy = yaml.safe_load((root / POLICY_FILE).read_text(encoding="utf-8"))
            registry = json.loads((root / REGISTRY_FILE).read_text(encoding="utf-8"))
            rules = json.loads((root / RULES_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise ResourceError(f"cannot load bundled data from {root}: {exc}") from exc
        if not isinstance(policy, dict) or not isinstance(registry, dict) or not isinstance(rules, dict):
            raise ResourceError(f"bundled data under {root} is not a mapping")
        return cls(policy=policy, registry=registry, rules=rules)

    def _source_flag(self, source_id: str, key: str) -> str:
        for source in self.policy.get("sources", []):
            if source.get("id") == source_id:
                return str(source.get(key, "excluded"))
        return "excluded"

    @property
    def disclaimer(self) -> str:
        return str(self.policy.get("disclaimer", "")).strip()

    def blocked_reason(self, message: str) -> str | None:
        lowered = message.lower()
        for entry in self.policy.get("blocked_requests", []):
            if any(pattern in lowered for pattern in entry.get("patterns", [])):
                return str(entry.get("reason", "blocked"))
        return None

    def citable_documents(self, message: str, limit: int = 3) -> list[dict[str, str]]:
        words = _tokens(message)
        scored = []
        for doc in self.registry.get("documents", []):
            if self._source_flag(doc["source_id"], "answer_citation") != "allowed":
                continue
            score = len(words & {t for topic in doc.get("topics", []) for t in _tokens(topic)})
            if score:
                scored.append((score, doc["id"], doc))
        scored.sort(key=lambda item: (-item[0], item[1]))
        return [{"id": d["id"], "title": d["title"], "url": d["url"]} for _, _, d in scored[:limit]]

    def compilation_rules(self, message: str) -> list[dict[str, str]]:
        words = _tokens(message)
        return [
            {"id": rule["id"], "requirement": rule["requirement"]}
            for rule in self.rules.get("rules", [])
            if words & set(rule.get("keywords", []))
        ]

    def search_cases(self, query: str, limit: int, court: str | None) -> list[dict[str, Any]]:
        words = _tokens(query)
        results = []
        for case in self.registry.get("cases", []):
            if self._source_flag(case["source_id"], "case_search") != "allowed":
                continue
            if court and case["court"].lower() != court.lower():
                continue
            haystack = _tokens(" ".join([case["title"], case["summary"], *case.get("keywords", [])]))
            score = len(words & haystack)
            if score:
                results.append((score, case["year"], case))
        # Most relevant first; newer first among equals; citation breaks ties so output is stable.
        results.sort(key=lambda item: (-item[0], -item[1], item[2]["citation"]))
        return [
            {
                "citation": c["citation"],
                "title": c["title"],
                "court": c["court"],
                "year": c["year"],
                "summary": c["summary"],
                "score": score,
            }
            for score, _, c in results[:limit]
        ]

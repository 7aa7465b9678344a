"""`Sample`: one corpus record, as segments with roles.

A sample is a short text made of segments. Each segment has a role
(entity, relation, linker, text), a span id (the same entity mentioned
twice in a reasoning sample has the same span id), the index of the
sentence it belongs to and the KG id of the item it names. Linker segments
carry no text: they become the tokenizer's mask token and never carry loss
(KMLM section 3.2). The text of a sample is its segments joined by spaces,
except that a text segment of punctuation is glued to the segment before.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Sequence

ROLE_TEXT, ROLE_ENTITY, ROLE_RELATION, ROLE_LINKER = 0, 1, 2, 3

# Sample kinds (one per corpus stream and evaluation set).
KIND_CODE_SWITCHED = "code_switched"
KIND_PARALLEL = "parallel"
KIND_REASONING = "reasoning"
# Prix-LM's training data: monolingual triples and cross-lingual links.
KIND_TRIPLE = "triple"
KIND_LINK = "link"

_GLUED = frozenset(".,;:!?。、，")


def glued(text: str, role: int) -> bool:
  """A text segment of punctuation joins the segment before it with no space."""
  return role == ROLE_TEXT and text[:1] in _GLUED


@dataclasses.dataclass(frozen=True)
class Sample:
  """One record of a corpus.

  kind: KIND_*; lang: the sample's language ("fr") or code-switching pair
  ("en-fr"); variant: "label" or "alias" (which names were used);
  cycle: 0 for knowledge sentences, 3 or 4 for reasoning samples;
  segments/roles/span_ids/sentence_ids/item_ids: one entry per segment
  (item_ids: entity or relation id in the graph, -1 for linkers and text);
  triple_ids: per sentence, the row of `KnowledgeGraph.triples` it renders;
  group: samples rendering the same fact in several languages (a parallel
  pair) share a group id, -1 otherwise.
  """

  kind: str
  lang: str
  variant: str
  cycle: int
  segments: tuple[str, ...]
  roles: tuple[int, ...]
  span_ids: tuple[int, ...]
  sentence_ids: tuple[int, ...]
  item_ids: tuple[int, ...]
  triple_ids: tuple[int, ...]
  group: int = -1

  def text(self, mask_token: str = "<mask>") -> str:
    """The rendered text, linkers written as `mask_token`."""
    out = ""
    for seg, role in zip(self.segments, self.roles):
      piece = mask_token if role == ROLE_LINKER else seg
      if out and not glued(piece, role):
        out += " "
      out += piece
    return out

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), ensure_ascii=False, separators=(",", ":"))

  @classmethod
  def from_json(cls, line: str) -> "Sample":
    raw = json.loads(line)
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def triple_segments(head: str, relation: str, tail: str, ids: tuple[int, int, int],
                    span_ids: tuple[int, int, int], sentence: int):
  """Segments of one sentence `h <linker> r <linker> t.` as parallel lists."""
  h, r, t = (int(x) for x in ids)
  sh, sr, st = span_ids
  return ([head, "", relation, "", tail, "."],
          [ROLE_ENTITY, ROLE_LINKER, ROLE_RELATION, ROLE_LINKER, ROLE_ENTITY, ROLE_TEXT],
          [sh, -1, sr, -1, st, -1],
          [sentence] * 6,
          [h, -1, r, -1, t, -1])


def triple_sample(kind: str, lang: str, variant: str, names: Sequence[str],
                  ids: Sequence[int], triple_id: int, group: int = -1) -> Sample:
  """The knowledge sentence `h <linker> r <linker> t.` of one triple."""
  parts = triple_segments(*names, ids, (0, 1, 2), 0)
  return Sample(kind, lang, variant, 0, *map(tuple, parts), (int(triple_id),), int(group))


def cycle_sample(lang: str, variant: str, sentences, triple_ids: tuple[int, ...]) -> Sample:
  """The reasoning sample of a cycle's 3 or 5 sentences, each ((head, relation, tail) names,
  their item ids): entity span ids 0..3 in order of first mention (an entity is its id and
  name), relation span ids 4 + sentence index."""
  spans: dict[tuple, int] = {}
  columns = [[], [], [], [], []]  # segments, roles, span ids, sentence ids, item ids
  for k, (names, (h, r, t)) in enumerate(sentences):
    sh = spans.setdefault((h, names[0]), len(spans))
    st = spans.setdefault((t, names[2]), len(spans))
    for column, part in zip(columns, triple_segments(*names, (h, r, t), (sh, 4 + k, st), k)):
      column.extend(part)
  return Sample(KIND_REASONING, lang, variant, {3: 3, 5: 4}[len(triple_ids)],
                *map(tuple, columns), triple_ids)

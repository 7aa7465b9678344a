"""Evaluation-set readers: each fixture (real formats, hand-written) and malformed input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kmlm_jax.evaluation.readers import (ClassificationExample, QAExample, ReaderError,
                                         TaggedSentence, iob1_to_iob2, load_tfds, parse_markers,
                                         read_conll, read_facts, read_mlama, read_probes,
                                         read_relx, read_templates, read_xfactr, read_xlr)

DATA = Path(__file__).parents[1] / "fixtures" / "eval_datasets"


def _write(tmp_path: Path, name: str, text: str) -> Path:
  path = tmp_path / name
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text, encoding="utf-8")
  return path


def _raises(path: Path, line: int | None, *words: str):
  """pytest.raises for a ReaderError naming FILE:LINE and every word."""
  prefix = re.escape(f"{path}:{line}:" if line is not None else f"{path}")
  return pytest.raises(ReaderError, match=prefix + "".join(f"(?=.*{re.escape(w)})" for w in words))


# ------------------------------------------------------------------ XLR


def test_xlr_project_format_round_trips():
  path = DATA / "xlr/project/test.jsonl"
  items = read_xlr(path)
  assert [(x.id, x.lang, x.split, x.cycle) for x in items] == [
      ("xlr-4", "en", "test", 3), ("xlr-4", "de", "test", 3), ("xlr-9", "en", "test", 4)]
  first = items[0]
  assert first.answer == "said to be the same as" and first.label == 1
  assert first.context == ("Poland located in time zone UTC+01:00.",
                           "Poland located in time zone Central European Time.")
  assert first.choice_ids[first.label] == "P460" and first.question_triple == 12
  assert items[1].answer == "gilt als identisch mit"
  # to_dict gives back exactly the record the builder wrote.
  rows = [json.loads(l) for l in path.read_text("utf-8").splitlines()]
  assert [x.to_dict() for x in items] == rows


def test_xlr_release_layout_jsonl_and_json_array():
  items = read_xlr(DATA / "xlr/release/test.en.jsonl")
  assert [(x.id, x.lang, x.split, x.label) for x in items] == [
      ("en-0", "en", "test", 1), ("en-1", "en", "test", 1)]
  assert items[1].context == ("(Paris, capital of, France)",
                              "(France, contains the administrative territorial entity, "
                              "Île-de-France)")
  assert items[1].answer == "located in the administrative territorial entity"
  de = read_xlr(DATA / "xlr/release/de/dev.json")
  assert [(x.id, x.lang, x.split, x.answer) for x in de] == [
      ("dev-2", "de", "dev", "gilt als identisch mit"), ("dev-8", "de", "dev", "Hauptstadt von")]
  assert de[0].cycle is None and de[0].choice_ids is None
  assert read_xlr(DATA / "xlr/release/de/dev.json", lang="xx")[0].lang == "xx"


CHOICES = '["a", "b", "c", "d", "e", "f"]'
PROJECT = ('{{"id": "x", "split": "test", "lang": "en", "context": ["c"], "question": "q", '
           '"choices": {choices}, "label": {label}}}')


@pytest.mark.parametrize("line2, words", [
    (PROJECT.format(choices=CHOICES, label='"1"'), ["field 'label'", "expected an integer"]),
    (PROJECT.format(choices=CHOICES, label="true"), ["field 'label'", "expected an integer"]),
    (PROJECT.format(choices=CHOICES, label=6), ["field 'label'", "out of range"]),
    (PROJECT.format(choices='["a", "b"]', label=0), ["field 'choices'", "expected 6 choices"]),
    ('{"id": "x", "split": "test", "lang": "en", "context": ["c"], "choices": ' + CHOICES
     + ', "label": 0}', ["field 'question'", "missing key"]),
    ('{"id": "x", "split": "test", "lang": "en", ', ["invalid JSON"]),
    ('["not", "an", "object"]', ["expected a JSON object"]),
    ('{"context": [], "question": "q", "options": ' + CHOICES + ', "answer": "Z"}',
     ["field 'answer'", "index 25 out of range"]),
    ('{"context": [], "question": "q", "options": ' + CHOICES + ', "answer": "g h"}',
     ["field 'answer'", "matches 0 options"]),
    ('{"context": [], "question": "q", "options": ' + CHOICES + ', "answer": 1.5}',
     ["field 'answer'", "expected an integer index"]),
    ('{"context": [], "question": "q", "answer": 1}', ["missing key", "'choices'"]),
])
def test_xlr_errors_name_file_line_and_field(tmp_path, line2, words):
  good = PROJECT.format(choices=CHOICES, label=0)
  path = _write(tmp_path, "test.en.jsonl", good + "\n" + line2 + "\n")
  with _raises(path, 2, *words):
    read_xlr(path)


def test_xlr_release_needs_a_language(tmp_path):
  path = _write(tmp_path, "items.jsonl",
                '{"context": [], "question": "q", "options": ' + CHOICES + ', "answer": 0}\n')
  with _raises(path, 1, "no language", "lang="):
    read_xlr(path, split="test")
  assert read_xlr(path, lang="fr", split="test")[0].lang == "fr"


def test_json_array_errors_name_the_line(tmp_path):
  path = _write(tmp_path, "dev.de.json", '[\n  {"context": [],\n   "question": "q",,\n}]\n')
  with _raises(path, 3, "invalid JSON"):
    read_xlr(path)


def test_reads_what_the_corpus_build_writes(tmp_path):
  from kmlm_jax.kg import build
  from kmlm_jax.kg.sample import read_sample
  graph, _, _ = read_sample()
  build.write_evalsets(build.make_plan(graph, build.BuildOptions()), tmp_path)
  for path in sorted((tmp_path / "eval/xlr").glob("*.jsonl")) + [tmp_path / "eval/probes.jsonl"]:
    rows = [json.loads(l) for l in path.read_text("utf-8").splitlines()]
    read = read_probes(path) if path.name == "probes.jsonl" else read_xlr(path)
    assert len(rows) > 100 and [r.to_dict() for r in read] == rows


# ------------------------------------------------------------ cloze probes


def test_project_probes():
  path = DATA / "kmlm_eval/probes.jsonl"
  probes = read_probes(path)
  assert [(p.lang, p.relation, p.subject, p.object) for p in probes] == [
      ("en", "P36", "France", "Paris"), ("ja", "P36", "フランス", "パリ"),
      ("en", "P38", "Japan", "Japanese yen")]
  assert probes[0].fill("<mask>") == "The capital of France is <mask>."
  assert probes[1].fill("<mask><mask>") == "フランスの首都は<mask><mask>である。"
  assert probes[2].generic_template and probes[2].triple == 40
  rows = [json.loads(l) for l in path.read_text("utf-8").splitlines()]
  assert [p.to_dict() for p in probes] == rows


def test_xfactr_templates_and_facts():
  en = read_xfactr(DATA / "xfactr/templates/en.jsonl", DATA / "xfactr/facts")
  # P37 has no facts file: skipped.
  assert [(q.lang, q.relation, q.subject, q.object, q.subject_id, q.object_id) for q in en] == [
      ("en", "P19", "Douglas Adams", "Cambridge", "Q42", "Q350"),
      ("en", "P19", "Charles Darwin", "The Mount, Shrewsbury", "Q1035", "Q1327133"),
      ("en", "P36", "France", "Paris", "Q142", "Q90")]
  assert en[1].fill("[MASK] [MASK] [MASK]") == "Charles Darwin was born in [MASK] [MASK] [MASK] ."
  # TSV templates with a header; facts from facts/fr/P19.jsonl and facts/P36.fr.jsonl.
  fr = read_xfactr(DATA / "xfactr/templates/fr.tsv", DATA / "xfactr/facts")
  assert [(q.lang, q.template, q.subject, q.object) for q in fr] == [
      ("fr", "[X] est né à [Y] .", "Douglas Adams", "Cambridge"),
      ("fr", "[X] est né à [Y] .", "Marie Curie", "Varsovie"),
      ("fr", "La capitale de [X] est [Y] .", "Allemagne", "Berlin")]
  templates = read_templates(DATA / "xfactr/templates/en.jsonl")
  assert templates[0].label == "place of birth" and templates[1].label is None


def test_mlama_layout():
  en = read_mlama(DATA / "mlama", "en")
  assert [(q.relation, q.subject, q.object, q.uuid) for q in en] == [
      ("P19", "Douglas Adams", "Cambridge", "3f1c6a5e-9d0b-4a59-8a3e-1f1b5d2c7e10"),
      ("P36", "France", "Paris", "b0a6e2f4-2a64-4c2e-9a53-6f7f6c1d9b21"),
      ("P36", "Germany", "Berlin", "c2d7f3a5-3b75-4d3f-8b64-7a8a7d2eac32")]
  fr = read_mlama(DATA / "mlama", "fr")  # relations.jsonl, the older name
  assert [(q.lang, q.fill(q.object)) for q in fr] == [
      ("fr", "La capitale de Allemagne est Berlin .")]


def test_cloze_errors(tmp_path):
  bad = _write(tmp_path, "en.jsonl", '{"relation": "P19", "template": "[X] was born in [Y] ."}\n'
               '{"relation": "P20", "template": "[X] died ."}\n')
  with _raises(bad, 2, "field 'template'", "exactly one [Y]"):
    read_templates(bad)
  tsv = _write(tmp_path, "de.tsv", "P19\t[X] wurde in [Y] geboren .\nP20 [X] starb in [Y] .\n")
  with _raises(tsv, 2, "expected 2 tab-separated columns"):
    read_templates(tsv)
  facts = _write(tmp_path, "P19.jsonl", '{"sub_label": "A", "obj_label": "B"}\n'
                 '{"sub_label": "A", "obj_uri": "Q1"}\n')
  with _raises(facts, 2, "field 'obj_label'", "missing key"):
    read_facts(facts)
  with pytest.raises(ReaderError, match="no templates.jsonl or relations.jsonl"):
    read_mlama(tmp_path, "en")


# ------------------------------------------------------------------ NER


def test_conll2003_iob1_and_conversion():
  path = DATA / "ner/conll2003_en.txt"
  raw = read_conll(path, scheme="iob1")
  assert [s.tokens for s in raw.sentences] == [
      ("Lufthansa", "flies", "from", "Frankfurt", "to", "New", "York", "."),
      ("The", "Germany", "France", "friendly", "ended", "in", "Paris", "."),
      ("Reuters", "reported", "German", "exports", "rose", ".")]
  assert raw.sentences[1].tags == ("O", "I-LOC", "B-LOC", "O", "O", "O", "I-LOC", "O")
  assert [s.line for s in raw.sentences] == [3, 12, 23]
  iob2 = read_conll(path, scheme="iob1", to_iob2=True)
  assert [s.tags for s in iob2.sentences] == [
      ("B-ORG", "O", "O", "B-LOC", "O", "B-LOC", "I-LOC", "O"),
      ("O", "B-LOC", "B-LOC", "O", "O", "O", "B-LOC", "O"),
      ("B-ORG", "O", "B-MISC", "O", "O", "O")]
  assert iob2.labels == ("O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG")
  assert iob2.entity_types == ("LOC", "MISC", "ORG")
  # The same file read as strict IOB2 fails at the first entity, with a hint.
  with _raises(path, 3, "I-ORG after O in strict IOB2 mode", "scheme='iob1'"):
    read_conll(path)
  assert iob1_to_iob2(["I-PER", "I-PER", "I-LOC", "B-LOC"]) == ("B-PER", "I-PER", "B-LOC", "B-LOC")


def test_conll2002_two_and_three_columns():
  es_path = DATA / "ner/conll2002_es.latin1.txt"
  es = read_conll(es_path, encoding="latin-1")
  assert es.sentences[1] == TaggedSentence(
      ("La", "Real", "Academia", "Española", "premió", "a", "Ana", "María", "."),
      ("O", "B-ORG", "I-ORG", "I-ORG", "O", "O", "B-PER", "I-PER", "O"))
  assert es.sentences[0].tags[5] == "B-ORG" and es.labels == (
      "O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER")
  with _raises(es_path, 13, "not valid utf-8", "latin-1"):
    read_conll(es_path)
  nl = read_conll(DATA / "ner/conll2002_nl.txt", entity_types={"PER", "LOC", "ORG", "MISC"})
  assert [(s.tokens[:3], s.tags[:3]) for s in nl.sentences] == [
      (("De", "Europese", "Commissie"), ("O", "B-ORG", "I-ORG")),
      (("Jan", "Peeters", "woont"), ("B-PER", "I-PER", "O"))]


def test_wikiann_panx_prefixes_tab_and_space():
  panx = read_conll(DATA / "ner/panx_en.tsv")
  assert panx.sentences == (
      TaggedSentence(("Paris", "is", "the", "capital", "of", "France"),
                     ("B-LOC", "O", "O", "O", "O", "B-LOC"), "en"),
      TaggedSentence(("Barack", "Obama", "met", "the", "United", "Nations", "at", "12:30"),
                     ("B-PER", "I-PER", "O", "O", "B-ORG", "I-ORG", "O", "O"), "en"))
  fr = read_conll(DATA / "ner/wikiann_fr.txt")
  assert [(s.lang, s.tokens[0], s.tags[0]) for s in fr.sentences] == [
      ("fr", "Lyon", "B-LOC"), ("fr", "Jean", "B-PER")]
  kept = read_conll(DATA / "ner/wikiann_fr.txt", lang_prefix=False)
  assert kept.sentences[0].tokens[0] == "fr:Lyon" and kept.sentences[0].lang is None


@pytest.mark.parametrize("text, line, words, kwargs", [
    ("EU NNP B-NP B-ORG\nrejects VBZ B-VP\n", 2, ["expected 4 columns like line 1, got 3"], {}),
    ("Paris\tB-LOC\nis\tO\tx\n", 2, ["expected 2 columns like line 1, got 3"], {}),
    ("Paris B-LOC\nis X-LOC\n", 2, ["field 'tag (column 2)'", "unknown tag 'X-LOC'"], {}),
    ("Paris B-LOC\nis B-CITY\n", 2, ["unknown tag 'B-CITY'", "LOC, MISC, ORG, PER"],
     {"entity_types": ["PER", "LOC", "ORG", "MISC"]}),
    ("Paris B-LOC\n\nthe O\nHague I-LOC\n", 4, ["I-LOC after O in strict IOB2 mode"], {}),
    ("New B-LOC\nYork I-ORG\n", 2, ["I-ORG after B-LOC in strict IOB2 mode"], {}),
    ("Paris B-LOC\n", 1, ["B-LOC after O in IOB1 mode"], {"scheme": "iob1"}),
    ("en:Paris B-LOC\nLondon B-LOC\n", 2, ["no 'LANG:' prefix"], {}),
    ("en:Paris B-LOC\nfr:Londres B-LOC\n", 2, ["language 'fr' inside a 'en' sentence"], {}),
    ("Paris\n", 1, ["at least 2 columns"], {}),
])
def test_conll_errors_name_file_and_line(tmp_path, text, line, words, kwargs):
  path = _write(tmp_path, "bad.conll", text)
  with _raises(path, line, *words):
    read_conll(path, **kwargs)


def test_conll_loose_scheme_accepts_any_order(tmp_path):
  path = _write(tmp_path, "loose.txt", "the O\nHague I-LOC\n")
  assert read_conll(path, scheme="loose").sentences[0].tags == ("O", "I-LOC")
  assert read_conll(path, scheme="loose", to_iob2=True).sentences[0].tags == ("O", "B-LOC")


# ----------------------------------------------------------------- RELX


def test_relx_kbp37_blocks():
  examples = read_relx(DATA / "relx/RELX_en.txt", lang="en")
  assert [(e.id, e.relation, e.base_relation) for e in examples] == [
      ("1", "per:employee_of(e1,e2)", "per:employee_of"),
      ("2", "org:founded_by(e2,e1)", "org:founded_by"), ("3", "no_relation", "no_relation")]
  first = examples[0]
  assert first.text == "Marie Curie worked at the University of Paris until 1934 ."
  assert (first.e1, first.e2) == ((0, 11), (26, 45))
  assert (first.e1_text, first.e2_text) == ("Marie Curie", "University of Paris")
  second = examples[1]
  assert second.text == "Nokia was founded by Fredrik Idestam in 1865 ."
  assert (second.e1_text, second.e2_text, second.e2) == ("Fredrik Idestam", "Nokia", (0, 5))
  assert examples[2].text == "The bridge was painted by workers ." and examples[2].lang == "en"


def test_relx_tsv():
  de = read_relx(DATA / "relx/relx_de.tsv")
  assert [(e.id, e.text, e.e1, e.e2, e.relation) for e in de] == [
      ("7", "Angela Merkel wurde in Hamburg geboren.", (0, 13), (23, 30),
       "per:city_of_birth(e1,e2)"),
      ("8", "Die Firma Siemens hat ihren Sitz in München.", (36, 43), (10, 17),
       "org:city_of_headquarters(e2,e1)")]
  assert de[1].e1_text == "München"


def test_parse_markers_keeps_spacing_on_request():
  text, spans = parse_markers("a <e1> b </e1>  <e2>c</e2>", normalize_space=False)
  assert text == "a  b   c" and spans == {"e1": (3, 4), "e2": (7, 8)}
  text, spans = parse_markers("a <e1> b </e1>  <e2>c</e2>")
  assert text == "a b c" and spans == {"e1": (2, 3), "e2": (4, 5)}


@pytest.mark.parametrize("text, line, words", [
    ("1\t<e1>A</e1> and <e2>B are here.\tr\n", 1, ["field 'sentence'", "unclosed <e2>"]),
    ("1\t<e1>A and <e2>B</e2></e1>.\tr\n", 1, ["nested"]),
    ("1\t<e1>A</e1> and B</e2>.\tr\n", 1, ["</e2> without a matching <e2>"]),
    ("1\t<e1>A</e1> and <e1>B</e1>.\tr\n", 1, ["<e1> appears twice"]),
    ("1\t<e1>A</e1> and B.\tr\n", 1, ["no <e2>...</e2> entity"]),
    ("1\t<e1> </e1> and <e2>B</e2>.\tr\n", 1, ["empty <e1> entity"]),
    ("1\tx\ty\tz\n", 1, ["expected 3 tab-separated columns", "got 4"]),
    ('1\t"<e1>A</e1> and <e2>B</e2>."\n\n', 1, ["without a relation line"]),
    ("1\t<e1>A</e1> <e2>B</e2>\tr\n2\t<e1>A</e1> <e2>B</e2>\tbogus\n", 2,
     ["field 'relation'", "unknown relation 'bogus'"]),
])
def test_relx_errors(tmp_path, text, line, words):
  path = _write(tmp_path, "relx.tsv", text)
  with _raises(path, line, *words):
    read_relx(path, relations={"r"})


# ----------------------------------------------------------------- TFDS

# Hand-written rows in each builder's decoded feature format.
TFDS_ROWS = {
    "wikiann": [
        {"tokens": ["Paris", "is", "in", "France"], "tags": [5, 0, 0, 5],
         "langs": ["en"] * 4, "spans": ["LOC: Paris", "LOC: France"]},
        {"tokens": ["Barack", "Obama"], "tags": [1, 2], "langs": ["en"] * 2,
         "spans": ["PER: Barack Obama"]}],
    "conll2003": [{"tokens": ["EU", "rejects", "German", "call"], "pos": [22, 42, 16, 21],
                   "chunks": [11, 21, 11, 12], "ner": [3, 0, 7, 0]}],
    "xnli": [{"premise": {lang: f"premise {lang}" for lang in
                          "ar bg de el en es fr hi ru sw th tr ur vi zh".split()},
              "hypothesis": {"language": ["de", "en", "fr"],
                             "translation": ["Hypothese", "hypothesis", "hypothèse"]},
              "label": 2}],
    "paws_x_wiki": [{"sentence1": "Satz eins", "sentence2": "Satz zwei", "label": 1},
                    {"sentence1": "A", "sentence2": "B", "label": 0}],
    "xquad": [{"id": "q1", "title": "Berlin", "context": "Berlin ist die Hauptstadt.",
               "question": "Was ist Berlin?",
               "answers": {"text": ["die Hauptstadt"], "answer_start": [11]}}],
}


@pytest.fixture
def tfds_rows():
  tf = pytest.importorskip("tensorflow")
  tfds = pytest.importorskip("tensorflow_datasets")

  def as_dataset(self, split, **kwargs):
    spec = self.info.features.get_tensor_spec()
    return tf.data.Dataset.from_generator(lambda: iter(TFDS_ROWS[self.name]),
                                          output_signature=spec)

  with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    yield


def test_tfds_ner_matches_the_file_readers(tfds_rows):
  wikiann = load_tfds("wikiann/en", "test")
  assert wikiann.sentences == (
      TaggedSentence(("Paris", "is", "in", "France"), ("B-LOC", "O", "O", "B-LOC"), "en"),
      TaggedSentence(("Barack", "Obama"), ("B-PER", "I-PER"), "en"))
  assert wikiann.labels == ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
  assert load_tfds("xtreme_pan_x/de", "validation").sentences[1].lang == "de"
  conll = load_tfds("conll2003", "test")
  assert conll.sentences[0].tags == ("B-ORG", "O", "B-MISC", "O")


def test_tfds_classification_and_qa(tfds_rows):
  xnli = load_tfds("xnli", "test", languages=["de", "fr"])
  assert xnli == [
      ClassificationExample("xnli[test]/0/de", "premise de", "Hypothese", 2, "contradiction", "de"),
      ClassificationExample("xnli[test]/0/fr", "premise fr", "hypothèse", 2, "contradiction",
                            "fr")]
  paws = load_tfds("paws_x_wiki/de", "test")
  assert [(e.text, e.text_pair, e.label, e.lang) for e in paws] == [
      ("Satz eins", "Satz zwei", 1, "de"), ("A", "B", 0, "de")]
  assert load_tfds("xquad/de", "validation") == [QAExample(
      "q1", "Berlin ist die Hauptstadt.", "Was ist Berlin?", ("die Hauptstadt",), (11,), "de")]


def test_tfds_random_mock_and_errors(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=3):
    paws = load_tfds("xtreme_pawsx/fr", "test")
    assert len(paws) == 3 and all(e.label in (0, 1) and e.lang == "fr" for e in paws)
    # Random mock rows have as many tags as they like: the mismatch is reported.
    with pytest.raises(ReaderError, match=r"wikiann/en\[test\] example 0: \d+ tokens but \d+ tags"):
      load_tfds("wikiann/en", "test")
  with pytest.raises(ReaderError, match="not a supported TFDS benchmark"):
    load_tfds("mnist", "test")
  with pytest.raises(ReaderError, match="not prepared in data_dir"):
    load_tfds("wikiann/en", "test", data_dir=str(tmp_path))

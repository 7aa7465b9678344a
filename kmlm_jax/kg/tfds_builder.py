"""The KMLM corpora as a TensorFlow Datasets builder: `kmlm_corpora`.

Importing this module registers the builder. Its examples come from the
same generators as `kmlm-jax kg build` (`build.make_plan`, `Plan.units`,
`Plan.generate`), one split per stream (`code_switched`, `parallel`,
`reasoning`); example `f"{u}-{j}"` is sample j of unit u. Features mirror
`records.py`: kind/lang/variant text, cycle/group int64, segments a
sequence of text, roles/span_ids/sentence_ids/item_ids/triple_ids
sequences of int64. Nothing is downloaded.

  import kmlm_jax.kg.tfds_builder  # registers kmlm_corpora
  ds = tfds.load("kmlm_corpora/sample", split="parallel", data_dir=DIR)

The `sample` config is the embedded KG in the ten KMLM languages. For a
dump of your own, pass a config:

  config = KmlmCorporaConfig(name="wd5m", dump_path="latest-all.json.bz2",
                             languages=("en", "fr"), entity_whitelist="ids.txt")
  tfds.builder("kmlm_corpora", config=config, data_dir=DIR).download_and_prepare()

With a Beam runner in the download config (`tfds.download.DownloadConfig(
beam_runner=..., beam_options=...)`) the units are generated on Beam
workers (TFDS's own Beam path); the plan then travels inside the pipeline.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from kmlm_jax.kg import build, records
from kmlm_jax.kg.sample import KMLM_LANGUAGES, sample_dump_path

_DESCRIPTION = """\
Knowledge-intensive multilingual pretraining corpora generated from a
Wikidata knowledge graph as in KMLM (Liu et al., 2022): code-switched and
parallel knowledge sentences and multi-hop reasoning samples from cycles.
Each example is a sequence of segments with roles (text, entity, relation,
linker), span ids, sentence ids and KG item ids."""

_CITATION = """\
@inproceedings{liu-etal-2022-enhancing,
  title = {Enhancing Multilingual Language Model with Massive Multilingual
           Knowledge Triples},
  author = {Liu, Linlin and Li, Xin and He, Ruidan and Bing, Lidong and
            Joty, Shafiq and Si, Luo},
  booktitle = {Proceedings of EMNLP 2022},
  year = {2022},
}"""


@dataclasses.dataclass(eq=False)
class KmlmCorporaConfig(tfds.core.BuilderConfig):
  """A KG source and the options of `kmlm-jax kg build` that change samples.

  dump_path: a Wikidata JSON dump (`.json`, `.json.gz`, `.json.bz2`); None
  means the embedded sample. The whitelists and `skip_bad_records` are the
  dump reader's arguments; `seed` is `BuildOptions.seed`.
  """

  dump_path: str | None = None
  languages: tuple[str, ...] = KMLM_LANGUAGES
  seed: int = 0
  entity_whitelist: str | None = None
  relation_whitelist: str | None = None
  skip_bad_records: bool = False


def features() -> tfds.features.FeaturesDict:
  spec = {k: tfds.features.Text() for k in records.SCALAR_BYTES}
  spec.update({k: tfds.features.Scalar(np.int64) for k in records.SCALAR_INTS})
  spec["segments"] = tfds.features.Sequence(tfds.features.Text())
  spec.update({k: tfds.features.Sequence(np.int64) for k in records.LIST_INTS})
  return tfds.features.FeaturesDict(spec)


def example(sample) -> dict:
  """A `Sample` as a feature dict of `features()`."""
  out = {k: getattr(sample, k) for k in records.SCALAR_BYTES + records.SCALAR_INTS}
  out.update({k: list(getattr(sample, k)) for k in ("segments",) + records.LIST_INTS})
  return out


def unit_examples(element, plan: build.Plan):
  """(u, unit) -> (f"{u}-{j}", example) for each sample j of the unit."""
  u, unit = element
  for j, sample in enumerate(plan.generate(unit, {})):
    yield f"{u}-{j}", example(sample)


class KmlmCorpora(tfds.core.GeneratorBasedBuilder):
  """KMLM pretraining corpora generated from a knowledge graph."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release: code_switched, parallel and reasoning splits."}
  BUILDER_CONFIGS = [
      KmlmCorporaConfig(name="sample", description="The embedded sample KG (countries, "
                        "regions, capitals, languages, currencies) in the ten KMLM languages."),
  ]
  _use_beam = False

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS 4.9.10's own lookup imports `importlib_resources`, which it does
    # not install on Python >= 3.9 (tensorflow/datasets#11212).
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=_DESCRIPTION, features=features(), supervised_keys=None,
        homepage="https://github.com/ntunlp/kmlm", citation=_CITATION)

  def download_and_prepare(self, *, download_config=None, **kwargs):
    # Generation goes through Beam only when the caller configured a runner.
    self._use_beam = bool(download_config is not None and (
        download_config.beam_runner is not None or download_config.beam_options is not None))
    return super().download_and_prepare(download_config=download_config, **kwargs)

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    plan = self._plan()
    return {stream: self._generate_examples(plan, stream) for stream in build.STREAMS}

  def _plan(self) -> build.Plan:
    from kmlm_jax.kg.wikidata import read_wikidata_dump
    config = self.builder_config
    graph, _, _ = read_wikidata_dump(
        config.dump_path or sample_dump_path(), config.languages,
        entity_whitelist=config.entity_whitelist, relation_whitelist=config.relation_whitelist,
        skip_bad_records=config.skip_bad_records)
    return build.make_plan(graph, build.BuildOptions(seed=config.seed))

  def _generate_examples(self, plan: build.Plan, stream: str):
    units = list(enumerate(plan.units(stream)))
    if self._use_beam:
      import apache_beam as beam
      return (beam.Create(units) | beam.Reshuffle()
              | beam.FlatMap(unit_examples, plan=plan))
    return (item for unit in units for item in unit_examples(unit, plan))

"""Beam pipelines and the TFDS builder give what the in-process paths give:
the same shard bytes, the same graph, stats and errors, the same samples."""

from __future__ import annotations

import collections
import gzip
import hashlib
from pathlib import Path

import pytest

from kmlm_jax import cli
from kmlm_jax.kg import beam_pipeline, build, reasoning, records, sentences
from kmlm_jax.kg.errors import KGInputError
from kmlm_jax.kg.sample import KMLM_LANGUAGES, sample_dump_path
from kmlm_jax.kg.wikidata import read_wikidata_dump

FIXTURE = Path(__file__).parents[1] / "fixtures" / "wikidata" / "small_dump.json"
LANGS = ["en", "fr", "de", "ja", "zh"]


def tree(directory: Path) -> dict[str, str]:
  """Relative path -> sha256 of every file under `directory`."""
  return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(directory.rglob("*")) if p.is_file()}


def assert_same_read(path, languages, split_bytes: int, beam_options: str = "",
                     **kwargs) -> None:
  graph, stats, info = read_wikidata_dump(path, languages, **kwargs)
  b_graph, b_stats, b_info = beam_pipeline.read_wikidata_dump_beam(
      path, languages, beam_options, split_bytes=split_bytes, **kwargs)
  assert b_graph.fingerprint() == graph.fingerprint()
  assert list(b_graph.entity_ids) == list(graph.entity_ids)
  assert b_stats.as_dict() == stats.as_dict()
  assert b_info == info


def read_error(reader, *args, **kwargs) -> str:
  with pytest.raises(KGInputError) as err:
    reader(*args, **kwargs)
  return str(err.value)


@pytest.fixture(scope="module")
def small_sample(tmp_path_factory):
  """The sample's first 150 entities in en and de: (graph, whitelist path)."""
  ids = read_wikidata_dump(sample_dump_path(), ["en"])[0].entity_ids[:150]
  whitelist = tmp_path_factory.mktemp("whitelist") / "entities.txt"
  whitelist.write_text("\n".join(ids) + "\n", encoding="utf-8")
  graph, _, _ = read_wikidata_dump(sample_dump_path(), ["en", "de"], entity_whitelist=whitelist)
  return graph, whitelist


# ----------------------------------------------------------------- dump reader

def test_beam_reader_matches_sequential_on_sample():
  assert_same_read(sample_dump_path(), KMLM_LANGUAGES, split_bytes=256 << 10)


def test_beam_reader_stages_a_local_dump_under_temp_location(tmp_path):
  # Workers read the copy under --temp_location; names and lines stay the original's.
  assert_same_read(FIXTURE, LANGS, split_bytes=4096,
                   beam_options=f"--temp_location={tmp_path} --direct_num_workers=2 "
                                "--direct_running_mode=multi_threading")
  assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs", [{}, {"max_entities": 3}, {"whitelist": ["Q42", "Q5", "Q145"]}])
def test_beam_reader_matches_sequential_on_fixture(tmp_path, kwargs):
  if "whitelist" in kwargs:
    wl = tmp_path / "entities.txt"
    wl.write_text("\n".join(kwargs.pop("whitelist")) + "\n", encoding="utf-8")
    kwargs["entity_whitelist"] = wl
  # 500-byte ranges: most lines start in one range and end in another.
  assert_same_read(FIXTURE, LANGS, split_bytes=500, **kwargs)


@pytest.mark.parametrize("shift", [-1, 0, 1])
def test_beam_reader_ranges_on_line_starts(tmp_path, shift):
  """Lines padded to one width W: with W-byte ranges every range starts
  exactly on a line start (and one byte off with shift -1 / +1)."""
  lines = FIXTURE.read_text(encoding="utf-8").splitlines()
  lines.insert(3, "")  # a blank line still counts for the line numbers
  width = max(len(l.encode()) for l in lines) + 1
  path = tmp_path / "dump.json"
  path.write_bytes(b"".join(l.encode().ljust(width - 1) + b"\n" for l in lines))
  assert_same_read(path, LANGS, split_bytes=width + shift)


def test_beam_reader_matches_sequential_on_gzip(tmp_path):
  path = tmp_path / "dump.json.gz"
  with gzip.open(path, "wb") as f:
    f.write(FIXTURE.read_bytes())
  assert_same_read(path, LANGS, split_bytes=500)


def test_beam_reader_bad_records_same_error_and_skips(tmp_path):
  lines = FIXTURE.read_text(encoding="utf-8").splitlines()
  lines[4] = lines[4][:200] + ","                                  # line 5: malformed JSON
  lines[6] = '"mainsnake":'.join(lines[6].rsplit('"mainsnak":', 1))  # line 7: last claim bad
  lines.insert(9, lines[2])                                        # line 10: Q5 again
  path = tmp_path / "dump.json"
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  sequential = read_error(read_wikidata_dump, path, LANGS)
  assert sequential.startswith(f"{path}:5: malformed JSON")
  assert read_error(beam_pipeline.read_wikidata_dump_beam, path, LANGS,
                    split_bytes=700) == sequential
  assert_same_read(path, LANGS, split_bytes=700, skip_bad_records=True)
  _, stats, _ = read_wikidata_dump(path, LANGS, skip_bad_records=True)
  assert {k: stats.skipped[k] for k in ("malformed_json", "malformed_field", "duplicate_id")} == {
      "malformed_json": 1, "malformed_field": 1, "duplicate_id": 1}


def test_beam_reader_truncated_gzip_same_error(tmp_path):
  full = gzip.compress(FIXTURE.read_bytes())
  path = tmp_path / "cut.json.gz"
  path.write_bytes(full[:len(full) // 2])
  sequential = read_error(read_wikidata_dump, path, LANGS)
  assert "truncated or corrupt after line" in sequential
  assert read_error(beam_pipeline.read_wikidata_dump_beam, path, LANGS) == sequential


def test_unknown_beam_option_is_an_error():
  with pytest.raises(KGInputError, match="unknown Beam pipeline option.*--direct_num_wrokers"):
    beam_pipeline.stream_writer("--direct_num_wrokers=2")


# ----------------------------------------------------------------- corpus shards

@pytest.mark.parametrize("beam_options", [
    "--direct_running_mode=multi_threading --direct_num_workers=2",
    "--temp_location={tmp}/beam-temp",  # workers write to staging; shards are copied back
])
@pytest.mark.slow
def test_beam_stream_writer_matches_in_process(tmp_path, monkeypatch, small_sample, beam_options):
  # Small chunks: several units per stream, so shards interleave units.
  monkeypatch.setattr(sentences, "CHUNK", 64)
  monkeypatch.setattr(reasoning, "CHUNK", 16)
  graph, _ = small_sample
  options = build.BuildOptions(num_shards=3, preview=150)
  plan = build.make_plan(graph, options)
  assert all(len(plan.units(s)) > 1 for s in build.STREAMS)
  direct = build.build(graph, tmp_path / "direct", options)
  writer = beam_pipeline.stream_writer(beam_options.format(tmp=tmp_path))
  beam = build.build(graph, tmp_path / "beam", options, stream_writer=writer)
  assert beam["streams"] == direct["streams"]
  # The validation split too: every stream has samples, in files of its own.
  assert beam["validation"] == direct["validation"]
  assert all(e["samples"] > 0 for e in direct["validation"]["streams"].values())
  files = tree(tmp_path / "direct")
  assert sum(f.startswith("validation/") for f in files) == 3 * len(build.STREAMS)
  assert tree(tmp_path / "beam") == files
  assert not (tmp_path / "beam-temp").exists() or not any((tmp_path / "beam-temp").iterdir())


@pytest.mark.slow
def test_cli_beam_build_equals_direct_build_on_sample(tmp_path):
  """The whole sample, every stream: `--runner beam` (Beam reader and writer)
  writes the same files as `--runner direct`, manifest included."""
  for runner in ("direct", "beam"):
    assert cli.main(["kg", "build", "--sample", "--runner", runner,
                     "--out", str(tmp_path / runner)]) == 0
  direct, beam = tree(tmp_path / "direct"), tree(tmp_path / "beam")
  assert len(direct) > 20 and beam == direct
  assert any(f.startswith("validation/reasoning/") for f in direct)


# ----------------------------------------------------------------- TFDS

@pytest.fixture(scope="module")
def tfds_prepared(tmp_path_factory, small_sample):
  """(data_dir, config, direct build dir) for the small sample."""
  import tensorflow_datasets as tfds
  from kmlm_jax.kg import tfds_builder
  graph, whitelist = small_sample
  config = tfds_builder.KmlmCorporaConfig(
      name="test_en_de", dump_path=str(sample_dump_path()), languages=("en", "de"),
      entity_whitelist=str(whitelist))
  data_dir = tmp_path_factory.mktemp("tfds")
  tfds.builder("kmlm_corpora", config=config, data_dir=data_dir).download_and_prepare()
  out = tmp_path_factory.mktemp("direct") / "build"
  build.build(graph, out, build.BuildOptions())
  return data_dir, config, out


def shard_samples(out: Path, manifest: dict, stream: str) -> collections.Counter:
  import tensorflow as tf
  return collections.Counter(
      records.from_example(r.numpy()) for p in manifest["streams"][stream]["shards"]
      for r in tf.data.TFRecordDataset(str(out / p)))


def tfds_samples(dataset) -> collections.Counter:
  from kmlm_jax.kg.samples import Sample
  out = collections.Counter()
  for ex in dataset.as_numpy_iterator():
    out[Sample(**{k: v.decode() if isinstance(v, bytes) else
                  tuple(x.decode() for x in v) if k == "segments" else
                  tuple(int(x) for x in v) if k in records.LIST_INTS else int(v)
                  for k, v in ex.items()})] += 1
  return out


def test_tfds_builder_matches_direct_build(tfds_prepared):
  import tensorflow_datasets as tfds
  data_dir, config, out = tfds_prepared
  manifest = build.read_manifest(out)
  builder = tfds.builder("kmlm_corpora", config=config, data_dir=data_dir)
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      s: manifest["streams"][s]["samples"] for s in build.STREAMS}
  for stream in build.STREAMS:
    loaded = tfds.load("kmlm_corpora", split=stream, data_dir=data_dir,
                       builder_kwargs={"config": config})
    assert tfds_samples(loaded) == shard_samples(out, manifest, stream), stream


def test_tfds_example_keys_are_unit_and_index(small_sample):
  from kmlm_jax.kg import tfds_builder
  plan = build.make_plan(small_sample[0], build.BuildOptions())
  unit = plan.units("reasoning")[1]
  first = next(iter(plan.generate(unit, {})))
  key, example = next(tfds_builder.unit_examples((1, unit), plan))
  assert key == "1-0" and example == tfds_builder.example(first)
  assert example["segments"] == list(first.segments) and example["cycle"] == first.cycle


def test_seqio_reads_the_tfds_dataset(tfds_prepared):
  import seqio
  data_dir, config, out = tfds_prepared
  source = seqio.TfdsDataSource(tfds_name=f"kmlm_corpora/{config.name}:1.0.0",
                                tfds_data_dir=str(data_dir))
  manifest = build.read_manifest(out)
  examples = list(source.get_dataset(split="parallel", shuffle=False).as_numpy_iterator())
  assert len(examples) == manifest["streams"]["parallel"]["samples"]
  assert set(examples[0]) == set(records.SCALAR_BYTES + records.SCALAR_INTS + ("segments",)
                                 + records.LIST_INTS)


@pytest.mark.slow
def test_tfds_beam_generation_gives_the_same_examples(tmp_path, tfds_prepared):
  import tensorflow_datasets as tfds
  from apache_beam.options.pipeline_options import PipelineOptions
  data_dir, config, _ = tfds_prepared
  beam_dir = tmp_path / "tfds-beam"
  tfds.builder("kmlm_corpora", config=config, data_dir=beam_dir).download_and_prepare(
      download_config=tfds.download.DownloadConfig(beam_options=PipelineOptions([])))
  for stream in ("parallel", "reasoning"):
    load = lambda d: tfds.load("kmlm_corpora", split=stream, data_dir=d,
                               builder_kwargs={"config": config})
    assert tfds_samples(load(beam_dir)) == tfds_samples(load(data_dir))


def test_tfds_sample_config_is_registered(tmp_path):
  import tensorflow_datasets as tfds
  from kmlm_jax.kg import tfds_builder  # noqa: F401  (registers kmlm_corpora)
  builder = tfds.builder("kmlm_corpora/sample", data_dir=tmp_path)
  assert builder.builder_config.languages == KMLM_LANGUAGES
  assert str(builder.version) == "1.0.0"
  assert set(builder.info.features) == set(records.SCALAR_BYTES + records.SCALAR_INTS
                                           + ("segments",) + records.LIST_INTS)

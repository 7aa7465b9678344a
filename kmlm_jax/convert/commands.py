"""The two conversions the CLI exposes, and `init`, as library functions.

Both write to a temporary directory that is renamed at the end, so a failed
conversion (or a failed `verify`) leaves nothing at the destination; a destination
that cannot be written is refused (`WriteError`) before the conversion starts.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import jax

from kmlm_jax import fileio
from kmlm_jax import model_checkpoint as mc
from kmlm_jax.convert import causal_lm, hf, verify as verify_lib


@dataclasses.dataclass
class Report:
  lines: list[str]
  max_abs_diff: float | None = None
  nonfinite: list[str] = dataclasses.field(default_factory=list)  # hf.nonfinite_note()s

  def ok(self) -> bool:
    return self.max_abs_diff is None or self.max_abs_diff <= verify_lib.TOLERANCE

  def warn_nonfinite(self, notes: list[str]) -> None:
    self.nonfinite = notes
    if notes:
      self.lines.append(hf.nonfinite_warning(notes))


class VerifyError(hf.ConversionError):
  """The converted model disagrees with transformers; nothing was written."""

  exit_code = 1

  def __init__(self, report: Report, what: str):
    nonfinite = f"; non-finite weights: {'; '.join(report.nonfinite)}" if report.nonfinite else ""
    super().__init__(f"verify failed: max_abs_diff={report.max_abs_diff:.3g} > "
                     f"{verify_lib.TOLERANCE} ({what}){nonfinite}; nothing written")
    self.report = report


def _check_target(target: Path, overwrite: bool) -> None:
  """Before the long part: an existing `target` (without overwrite), one that cannot be
  written."""
  fileio.check_output_dir(target, overwrite, hf.ConversionError)
  fileio.check_writable(target)


def _check_space(target: Path, config, tokenizer_dir: Path | None) -> None:
  """Before the long part: room for the fp32 parameters and the tokenizer files."""
  files = [tokenizer_dir / n for n in mc.TOKENIZER_FILES] if tokenizer_dir else []
  fileio.check_free_space(target, 4 * config.num_params()
                          + sum(f.stat().st_size for f in files if f.exists()))


def _verify(report: Report, config, params, hf_dir: Path, tokenizer_dir: Path | None,
            model: str, want_logits: bool, against: str) -> None:
  """Compares with transformers on the sample sentences tokenized by the tokenizer in
  `tokenizer_dir` (the one of `model`), or on random ids, saying which; a difference above
  the tolerance raises `VerifyError`. A causal model is compared with transformers'
  decoder, both under the causal mask."""
  tokenizer, source = verify_lib.load_tokenizer(tokenizer_dir, model)
  report.max_abs_diff, what, used = verify_lib.verify(config, params, hf_dir, want_logits,
                                                      tokenizer, source)
  report.lines.append(f"verify: {what} against {against}")
  report.lines.append(f"verify input: {used}")
  if not report.ok():
    raise VerifyError(report, what)


def hf_to_checkpoint(source: Path | str, target: Path | str, *, verify: bool = False,
                     overwrite: bool = False) -> Report:
  """transformers directory -> kmlm-jax model checkpoint. A decoder (`is_decoder`, the
  released Prix-LM) becomes a causal model whose tokenizer has the Prix-LM tokens
  (`causal_lm`)."""
  source, target = Path(source), Path(target)
  _check_target(target, overwrite)
  tokenizer_dir = source if any((source / n).exists() for n in mc.TOKENIZER_FILES) else None
  if tokenizer_dir is not None:
    mc.check_tokenizer_files(tokenizer_dir)
  _check_space(target, hf.read_hf_config(source), tokenizer_dir)
  with tempfile.TemporaryDirectory(prefix="kmlm-tokenizer-") as tmp:
    if hf.read_hf_config(source).attention == "causal" and causal_lm.needs_tokenizer_json(
        tokenizer_dir):
      causal_lm.write_tokenizer_json(tokenizer_dir, Path(tmp))
      tokenizer_dir = Path(tmp)
    return _hf_to_checkpoint(source, target, tokenizer_dir, verify, overwrite)


def _hf_to_checkpoint(source: Path, target: Path, tokenizer_dir: Path | None, verify: bool,
                      overwrite: bool) -> Report:
  loaded = hf.load_hf_params(source)
  c = loaded.config
  report = Report([f"read {source}: {c.flavour} L={c.num_layers} D={c.hidden_size} "
                   f"V={c.vocab_size} ({sum(v.size for v in jax.tree.leaves(loaded.params)):,} "
                   "parameters)"])
  if c.attention == "causal":
    report.lines += _decoder_lines(source, tokenizer_dir, c)
  if not loaded.has_mlm_head:
    report.lines.append("note: the checkpoint is a bare encoder; the MLM head was initialised "
                        "(normal(0.02) dense, zero biases)")
  if loaded.dropped:
    report.lines.append(f"not converted (buffers / other objectives): {', '.join(loaded.dropped)}")
  if tokenizer_dir is None:
    report.lines.append(f"note: no tokenizer files in {source}; the checkpoint has none")
  report.warn_nonfinite(loaded.nonfinite)
  metadata = {"source": str(source), "mlm_head_initialised": not loaded.has_mlm_head}
  # Verify before the rename, from what was written, so a failed check leaves nothing.
  with fileio.atomic_directory(target, overwrite, error=hf.ConversionError) as tmp:
    mc.save_model_checkpoint(tmp, c, loaded.params, metadata=metadata,
                             tokenizer_dir=tokenizer_dir)
    if verify:
      config, params, _ = mc.load_model_checkpoint(tmp)
      _verify(report, config, params, source, tokenizer_dir, str(source), loaded.has_mlm_head,
              "transformers PyTorch" + (" (is_decoder)" if c.attention == "causal" else ""))
  report.lines.append(f"wrote {target}")
  return report


def _decoder_lines(source: Path, tokenizer_dir: Path | None, config) -> list[str]:
  """Report lines of a decoder checkpoint; its tokenizer is checked (`causal_lm`)."""
  lines = ["decoder (config.json is_decoder: true): model.attention=causal, fully causal "
           "Prix-LM rows in training, scoring and link prediction"]
  if tokenizer_dir is None:
    return lines + ["note: no tokenizer to check for the Prix-LM tokens"]
  if tokenizer_dir != source:
    lines.append(f"tokenizer: {source} has no tokenizer.json; wrote one with transformers "
                 "from its sentencepiece.bpe.model and added tokens")
  return lines + [causal_lm.token_line(causal_lm.prixlm_token_ids(tokenizer_dir, config))]


def checkpoint_to_hf(source: Path | str, target: Path | str, *, verify: bool = False,
                     overwrite: bool = False) -> Report:
  """kmlm-jax model checkpoint, or training checkpoint (WORKDIR/checkpoints/STEP, or WORKDIR
  for its newest step: its parameters and its run's tokenizer) -> transformers MaskedLM
  directory, or decoder directory (`XLMRobertaForCausalLM`, `is_decoder`) for a causal
  model. Its tokenizer (the checkpoint's) says the model's true `model_max_length`."""
  source, target = Path(source), Path(target)
  _check_target(target, overwrite)
  tokenizer_dir = mc.tokenizer_dir_of(source)
  if tokenizer_dir is not None:
    mc.check_tokenizer_files(tokenizer_dir)
  _check_space(target, mc.read_model_config(source)[0], tokenizer_dir)
  config, params, metadata = mc.load_model_checkpoint(source)
  report = Report([f"read {source}: {config.flavour} L={config.num_layers} "
                   f"D={config.hidden_size}" + _training_note(metadata)])
  with fileio.atomic_directory(target, overwrite, error=hf.ConversionError) as tmp:
    report.warn_nonfinite(hf.write_hf_dir(tmp, config, params, tokenizer_dir=tokenizer_dir))
    if verify:  # with the tokenizer as exported: what a transformers user will load
      _verify(report, config, params, tmp, tmp if tokenizer_dir else None, str(source), True,
              f"transformers.{_auto_class(config)}")
  if tokenizer_dir is None:
    report.lines.append("note: no tokenizer files in the checkpoint; none exported")
  else:
    report.lines.append(f"tokenizer: {tokenizer_dir}, model_max_length={config.max_length}")
  report.lines.append(f"wrote {target}")
  return report


def _auto_class(config) -> str:
  """The transformers Auto class that loads the export of `config`."""
  return "AutoModelForCausalLM" if config.attention == "causal" else "AutoModelForMaskedLM"


def _training_note(metadata: dict) -> str:
  """Which step a training checkpoint gave (`export.load`'s metadata), or ''."""
  if "training_checkpoint" not in metadata:
    return ""
  checked = "checksums verified" if metadata.get("verified") else "no checksums: unverified"
  return (f" (training checkpoint {metadata['training_checkpoint']}, step {metadata['step']}: "
          f"parameters only, {checked})")


def known_tokenizer(config) -> tuple[Path | None, str]:
  """(folder of the installed tokenizer that fits `config`, a report line), or (None, a
  note why there is none): the real XLM-R tokenizer for XLM-R vocabularies."""
  from kmlm_jax.assets import AssetError, real_xlmr_tokenizer_json
  if config.flavour != "xlmr":
    return None, ("note: no mBERT tokenizer is installed; the checkpoint has none (convert "
                  "a transformers checkpoint with its tokenizer files to have one)")
  try:
    path = real_xlmr_tokenizer_json()
  except AssetError as e:
    return None, f"note: {e}; the checkpoint has no tokenizer"
  size = _tokenizer_json_size(path)
  if size > config.vocab_size:
    return None, (f"note: the real XLM-R tokenizer ({size:,} ids) does not fit vocab_size "
                  f"{config.vocab_size}; the checkpoint has no tokenizer")
  return path.parent, f"tokenizer: the real XLM-R tokenizer ({size:,} ids) from {path}"


def _tokenizer_json_size(path: Path) -> int:
  spec = json.loads(path.read_text(encoding="utf-8"))
  added = [t["id"] + 1 for t in spec.get("added_tokens", [])]
  return max([len(spec["model"]["vocab"]), *added])


def init_checkpoint(preset_name: str, target: Path | str, *, seed: int = 0,
                    overwrite: bool = False, **overrides) -> Report:
  """A randomly initialised checkpoint of a preset (for tests and benchmarks), with the
  installed tokenizer that fits it (`known_tokenizer`)."""
  from flax import nnx

  from kmlm_jax.config import PRESETS, preset
  from kmlm_jax.models.encoder import Encoder
  if preset_name not in PRESETS:
    raise hf.ConversionError(f"--preset {preset_name!r}: unknown model preset; known: "
                             f"{', '.join(PRESETS)}")
  target = Path(target)
  _check_target(target, overwrite)
  try:
    config = preset(preset_name, **overrides)
  except (TypeError, ValueError) as e:
    raise hf.ConversionError(f"preset {preset_name!r} with {overrides}: {e}") from None
  tokenizer_dir, tokenizer_line = known_tokenizer(config)
  _check_space(target, config, tokenizer_dir)
  params = mc.model_params(Encoder(config, rngs=nnx.Rngs(seed)))
  mc.save_model_checkpoint(target, config, params, metadata={"init": preset_name, "seed": seed},
                           tokenizer_dir=tokenizer_dir, overwrite=overwrite)
  return Report([f"wrote {target}: random {preset_name} ({config.num_params():,} parameters)",
                 tokenizer_line])

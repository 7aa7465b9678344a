"""The two conversions the CLI exposes, as library functions.

Both write to a temporary directory that is renamed at the end, so a failed
conversion (or a failed `verify`) leaves nothing at the destination.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax

from kmlm_jax import fileio
from kmlm_jax import model_checkpoint as mc
from kmlm_jax.convert import hf, verify as verify_lib


@dataclasses.dataclass
class Report:
  lines: list[str]
  max_abs_diff: float | None = None

  def ok(self) -> bool:
    return self.max_abs_diff is None or self.max_abs_diff <= verify_lib.TOLERANCE


class VerifyError(hf.ConversionError):
  """The converted model disagrees with transformers; nothing was written."""

  exit_code = 1

  def __init__(self, report: Report, what: str):
    super().__init__(f"verify failed: max_abs_diff={report.max_abs_diff:.3g} > "
                     f"{verify_lib.TOLERANCE} ({what}); nothing written")
    self.report = report


def _tokenizer_or_none(directory: Path | None):
  if directory is None:
    return None
  from kmlm_jax.text.tokenizers import load_tokenizer
  try:
    return load_tokenizer(directory)
  except Exception:  # an unusable tokenizer only downgrades the verify batch
    return None


def _verify(report: Report, config, params, hf_dir: Path, tokenizer_dir: Path | None,
            want_logits: bool, against: str) -> None:
  """Compares with transformers; a difference above the tolerance raises `VerifyError`."""
  report.max_abs_diff, what = verify_lib.verify(config, params, hf_dir, want_logits,
                                                tokenizer=_tokenizer_or_none(tokenizer_dir))
  report.lines.append(f"verify: {what} against {against}")
  if not report.ok():
    raise VerifyError(report, what)


def hf_to_checkpoint(source: Path | str, target: Path | str, *, verify: bool = False,
                     overwrite: bool = False) -> Report:
  """transformers directory -> kmlm-jax model checkpoint."""
  source, target = Path(source), Path(target)
  fileio.check_output_dir(target, overwrite, hf.ConversionError)  # before the long conversion
  loaded = hf.load_hf_params(source)
  c = loaded.config
  lines = [f"read {source}: {c.flavour} L={c.num_layers} D={c.hidden_size} "
           f"V={c.vocab_size} ({sum(v.size for v in jax.tree.leaves(loaded.params)):,} parameters)"]
  if not loaded.has_mlm_head:
    lines.append("note: the checkpoint is a bare encoder; the MLM head was initialised "
                 "(normal(0.02) dense, zero biases)")
  if loaded.dropped:
    lines.append(f"not converted (buffers / other objectives): {', '.join(loaded.dropped)}")
  tokenizer_dir = source if any((source / n).exists() for n in mc.TOKENIZER_FILES) else None
  metadata = {"source": str(source), "mlm_head_initialised": not loaded.has_mlm_head}
  report = Report(lines)
  # Verify before the rename, from what was written, so a failed check leaves nothing.
  with fileio.atomic_directory(target, overwrite, error=hf.ConversionError) as tmp:
    mc.save_model_checkpoint(tmp, c, loaded.params, metadata=metadata,
                             tokenizer_dir=tokenizer_dir)
    if verify:
      config, params, _ = mc.load_model_checkpoint(tmp)
      _verify(report, config, params, source, tokenizer_dir, loaded.has_mlm_head,
              "transformers PyTorch")
  lines.append(f"wrote {target}")
  return report


def checkpoint_to_hf(source: Path | str, target: Path | str, *, verify: bool = False,
                     overwrite: bool = False) -> Report:
  """kmlm-jax model checkpoint -> transformers MaskedLM directory."""
  source, target = Path(source), Path(target)
  fileio.check_output_dir(target, overwrite, hf.ConversionError)
  config, params, metadata = mc.load_model_checkpoint(source)
  tokenizer_dir = mc.tokenizer_dir_of(source)
  lines = [f"read {source}: {config.flavour} L={config.num_layers} D={config.hidden_size}"]
  report = Report(lines)
  with fileio.atomic_directory(target, overwrite, error=hf.ConversionError) as tmp:
    hf.write_hf_dir(tmp, config, params, tokenizer_dir=tokenizer_dir)
    if verify:
      _verify(report, config, params, tmp, tokenizer_dir, True,
              "transformers.AutoModelForMaskedLM")
  if tokenizer_dir is None:
    lines.append("note: no tokenizer files in the checkpoint; none exported")
  lines.append(f"wrote {target}")
  return report


def init_checkpoint(preset_name: str, target: Path | str, *, seed: int = 0,
                    overwrite: bool = False, **overrides) -> Report:
  """A randomly initialised checkpoint of a preset (for tests and benchmarks)."""
  from flax import nnx

  from kmlm_jax.config import PRESETS, preset
  from kmlm_jax.models.encoder import Encoder
  if preset_name not in PRESETS:
    raise hf.ConversionError(f"--preset {preset_name!r}: unknown model preset; known: "
                             f"{', '.join(PRESETS)}")
  fileio.check_output_dir(target, overwrite, hf.ConversionError)
  try:
    config = preset(preset_name, **overrides)
  except (TypeError, ValueError) as e:
    raise hf.ConversionError(f"preset {preset_name!r} with {overrides}: {e}") from None
  params = mc.model_params(Encoder(config, rngs=nnx.Rngs(seed)))
  mc.save_model_checkpoint(target, config, params, metadata={"init": preset_name, "seed": seed},
                           overwrite=overwrite)
  return Report([f"wrote {target}: random {preset_name} ({config.num_params():,} parameters)"])

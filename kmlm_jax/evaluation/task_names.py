"""The task names of `kmlm-jax eval` (`run.TASKS`), in a module without heavy imports: the
CLI's `--help` lists them."""

TASKS = ("xlr", "probe", "probe_rank", "ner", "relx", "lp")
# Tasks that fine-tune a head (config.finetune) on English.
FINETUNE_TASKS = ("xlr", "ner", "relx")

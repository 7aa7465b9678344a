"""The former input pipeline (seqio + per-example Python), the reference of the data bench."""

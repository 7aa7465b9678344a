"""Knowledge graphs: readers, columnar tables, sentence and cycle generators."""

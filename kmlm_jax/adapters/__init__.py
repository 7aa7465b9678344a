"""Knowledge adapters (EP, TP, ES, TS) and AdapterFusion on a frozen encoder: staged
training, cosine-retrieval evaluation and export with AdapterHub names."""

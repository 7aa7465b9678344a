"""Knowledge adapters (EP, TP, ES, TS) and AdapterFusion on a frozen encoder.

`config` (run configs), `data` (training pairs and batches), `trex` (T-REx
reader), `losses` (pooling, InfoNCE), `train` (the staged, sharded
training), `evaluate` (cosine-retrieval KG completion and entity
alignment), `export` (PyTorch state dict with AdapterHub names).
"""

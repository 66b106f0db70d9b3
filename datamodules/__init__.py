"""HF-datasets LightningDataModules, audio I/O, features, collate and the built-in synthetic corpus."""

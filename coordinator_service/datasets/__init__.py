"""Importing datasets into shards (``importer``), listing them (``catalog``), and the CLI
sub-commands (``commands``). The shard and manifest format is ``shared.dataset_shards``."""

"""The domains' text: builtin and hub sources, shards, the tokenizer, the arithmetic traces."""

"""Architecture searches. Each method's algorithm is a module here; its command-line glue (options,
how `hwnas search --method M` runs it) is `hwnas.cli.methods.<name>`."""

# The search methods, in the order `hwnas search --method` lists them and reports name them.
METHOD_NAMES = ("tfnas", "unas", "snas", "entrannas", "modnas")

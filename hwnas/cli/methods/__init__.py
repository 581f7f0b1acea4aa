"""One module per search method: its options and how the command line runs it (see `hwnas.cli.methods.registry`)."""

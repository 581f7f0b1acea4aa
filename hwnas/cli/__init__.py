"""The `hwnas` command: `main.py` holds the group, the measurement commands and the entry point;
each other module is one command group and exposes `commands`."""

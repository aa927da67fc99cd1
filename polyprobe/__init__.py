"""The `polyprobe` console entry point: it wires the subcommands of the other packages."""

__version__ = "0.1.0"

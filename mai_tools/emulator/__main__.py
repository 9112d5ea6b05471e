"""``python -m mai_tools.emulator --port 8000``."""

from ._cli import emulator_command

if __name__ == "__main__":
    emulator_command(prog_name="python -m mai_tools.emulator")

"""The desktop bundle's entry point: mai-tools' MCP server on stdio.

The host runs ``python server/main.py`` with ``PYTHONPATH`` set to ``server/lib`` (the
manifest's ``mcp_config``), where ``mcpb/build.py`` put mai-tools and its dependencies. The
folder is also put first on ``sys.path`` here, so a host that does not pass the environment
still runs the bundled copy rather than whatever its Python has installed.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))

# Imported after the bundle's lib is on sys.path.
from mai_tools._mcp_entry import main

if __name__ == "__main__":
    main()

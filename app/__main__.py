"""Start the explorer: `python app` from the repository, or `python /path/to/app` from anywhere;
arguments go to `streamlit run` (e.g. `python app --server.port 8600`).

Streamlit reads .streamlit/config.toml only from the folder it is started in, so a plain
`streamlit run /path/to/app/main.py` elsewhere listens on every interface and sends usage
statistics. The settings that must hold wherever it starts are given here on the command
line instead, where they outrank any config file.
"""

import os
import sys
from pathlib import Path

MAIN = Path(__file__).resolve().parent / "main.py"
SETTINGS = [
    "--server.address=127.0.0.1",  # local only; put an authenticating proxy in front to share
    "--browser.gatherUsageStats=false",  # offline, no telemetry
    "--server.headless=true",  # no browser launch, no e-mail prompt
    "--server.fileWatcherType=none",  # no reloads from file changes
    "--server.runOnSave=false",
    "--client.toolbarMode=viewer",  # hides rerun / clear cache / deploy
    "--client.showErrorDetails=type",  # exception type only in the browser
]


def command(args: list[str]) -> list[str]:
    """The streamlit command line; the caller's arguments come last and win."""
    return [sys.executable, "-m", "streamlit", "run", str(MAIN), *SETTINGS, *args]


if __name__ == "__main__":
    argv = command(sys.argv[1:])
    os.execv(argv[0], argv)  # streamlit takes over this process (Ctrl-C stops it directly)

"""``python -m gateway.cli``: the ``meshgate`` command line."""

from gateway.cli import app

if __name__ == "__main__":
    app()

"""``python -m xbatcher``: the same as the ``xbatcher`` command."""

from xbatcher.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

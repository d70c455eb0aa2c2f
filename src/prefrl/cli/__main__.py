"""``python -m prefrl.cli …`` (the same as ``python -m prefrl …`` and ``prefrl …``)."""

from prefrl.cli import main

if __name__ == "__main__":
    main()

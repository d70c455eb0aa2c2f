"""``python -m prefrl …``: the same command as ``prefrl …`` (also under ``accelerate launch -m prefrl``)."""

from prefrl.cli import main

if __name__ == "__main__":
    main()

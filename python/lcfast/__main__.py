"""`python -m lcfast …` (what torchrun launches)."""

from lcfast.cli.app import main

if __name__ == "__main__":
    main()

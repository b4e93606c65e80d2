"""`python -m coldcast.cli`: the same as the `coldcast` script."""

from coldcast.cli import main

if __name__ == "__main__":
    main()

"""``python -m dens_lightning`` and the ``dens-lightning`` command."""

from .allocator import restart_with_huge_pages


def main() -> int:
    restart_with_huge_pages()  # first: the restart repeats everything before it
    from .cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())

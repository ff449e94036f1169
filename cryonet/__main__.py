"""``python -m cryonet``: the same command as the ``cryonet`` console script."""

import sys

from cryonet.cli import main

if __name__ == "__main__":
    sys.exit(main())
